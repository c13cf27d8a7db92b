"""RAG pipelines under test: the user's own systems, answering questions.

A pipeline is any object with ``answer(query)`` (sync or async) that receives a
:class:`~pytest_ragbench.datasets.Query` (``.id``, ``.text``, ``.metadata``) and returns an
output in the contract of :mod:`.contract`. Built-ins: ``http`` (:mod:`.http`, the user's
service) and ``recorded`` (:mod:`.recorded`, outputs produced elsewhere). Nothing here imports
pytest.
"""

from __future__ import annotations

from .contract import Context, OutputError, PipelineOutput, Usage, normalise_output

__all__ = ["Context", "OutputError", "PipelineOutput", "Usage", "normalise_output"]
