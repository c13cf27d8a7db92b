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



# The guard above can fail: the same probe sees them once a suite is collected. That is checked
# in the fresh process of test_run_costs.py::
# test_a_run_with_nothing_to_compare_or_keep_skips_baselines_and_history (a second process only
# for it cost about a second).
