"""Suite files: one schema (:mod:`.schema`), the loader that applies it (:mod:`.loader`), what a
validated suite is (:mod:`.model`), the rule for which files are suites (:mod:`.files`) and the
hand-over of validated suites from an xdist controller to its workers (:mod:`.handoff`).

This package module imports nothing, so importing :mod:`.schema` alone (``ragbench schema``)
reads neither YAML nor the loader, and the answer path can use the schema's models without an
import cycle through the loader.
"""
