"""Runs without suites import neither the suite parser nor YAML nor pydantic."""

from __future__ import annotations


def test_a_run_without_suites_imports_no_suite_parser_yaml_or_pydantic(pytester):
    pytester.makepyfile(test_plain="""
        import sys

        def test_modules():
            parser = {"yaml", "pydantic", "pydantic_core", "pytest_ragbench.suite.loader",
                      "pytest_ragbench.suite.schema"}
            assert not parser & set(sys.modules), parser & set(sys.modules)
    """)
    result = pytester.runpytest_subprocess("-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)


def test_loading_a_suite_does_import_them(pytester, mini_suite):
    # the guard above must be able to fail: the same probe sees them once a suite is collected
    mini_suite()
    pytester.makeconftest("""
        import sys

        def pytest_sessionfinish(session):
            print("PARSER", sorted(m for m in ("yaml", "pydantic") if m in sys.modules))
    """)
    # collecting the suite is what loads it; running its cases adds nothing to the probe
    result = pytester.runpytest_subprocess("--ragbench=suite.yaml", "-s", "--collect-only",
                                           "-p", "no:hypothesispytest")
    result.stdout.fnmatch_lines(["collected 5 items", "*PARSER [[]'pydantic', 'yaml'[]]*"])
