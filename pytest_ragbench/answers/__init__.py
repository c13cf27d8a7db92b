"""The answer path: configuration, prompt, metering, prefetching and the pipeline.

Modules: :mod:`.config` (suite values), :mod:`.prompt`, :mod:`.metering`, :mod:`.prefetch`,
:mod:`.pipeline` (generation, judging, scoring; :func:`~.pipeline.build_pipeline`) and
:mod:`.repeats`. The offline embedder is :class:`pytest_ragbench.embedders.HashingEmbedder`.
"""
