"""The test suite keeps away from the directory it is started in (a user's own data/ and runs/ live there)."""

import os
import subprocess
import sys

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tests_run_outside_the_directory_pytest_was_started_in():
    assert os.path.realpath(os.getcwd()) != os.path.realpath(conftest.STARTED_IN)
    assert not os.listdir(os.getcwd())  # a fresh, empty directory


def test_a_users_finished_run_in_the_callers_directory_changes_no_test(tmp_path):
    """The README's pipeline leaves runs/dpo_r16 behind; the CLI test that runs `dpo -r 16` with the default --runs
    must not meet it."""
    caller = tmp_path / "caller"
    (caller / "runs" / "dpo_r16").mkdir(parents=True)
    (caller / "runs" / "dpo_r16" / "config.json").write_text("{}")
    (caller / "runs" / "dpo_r16" / "adapter_model.safetensors").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                             os.path.join(ROOT, "pytest.ini"), "--rootdir", ROOT,
                             os.path.join(ROOT, "tests", "test_dpo.py") + "::test_cli_reports_a_missing_data_file_in_one_line"],
                            cwd=caller, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
    assert sorted(os.listdir(caller)) == ["runs"] and os.listdir(caller / "runs") == ["dpo_r16"]
