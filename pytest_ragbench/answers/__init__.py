"""The answer path: configuration, prompt, metering, prefetching and the pipeline.

Modules: :mod:`.config` (suite values), :mod:`.prompt`, :mod:`.metering`, :mod:`.prefetch`,
:mod:`.pipeline` (generation, judging, scoring; :func:`~.pipeline.build_pipeline`), :mod:`.repeats`
and :mod:`.hashing` (an offline embedder).
"""
