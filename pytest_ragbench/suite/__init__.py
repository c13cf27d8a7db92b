"""Suite files: one schema (:mod:`.schema`), the loader that applies it (:mod:`.loader`) and the
rule for which files are suites (:mod:`.files`).

This package module imports nothing, so importing :mod:`.schema` alone (``ragbench schema``)
reads neither YAML nor the loader, and the answer path can use the schema's models without an
import cycle through the loader.
"""
