"""Worker side, no pytest: the case runner of a suite and the checks made before its first case."""
