"""The cores' log records reach mmengine's logger (console and the run's log file) and, as the logger still
propagates, an application's own logging too -- each line printed once."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_py(code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def test_core_record_in_mmengine_console_and_run_log(tmp_path):
    log_file = str(tmp_path / "run.log")
    out = run_py(f"""
        import logging
        import effvit_plugins
        from mmengine.logging import MMLogger
        MMLogger.get_instance("run", log_file={log_file!r})  # what a Runner does: the current logger, with a file
        logging.getLogger("effvit_plugins.models.layers").info("core-record-1")
    """)
    (line,) = [line for line in out.splitlines() if "core-record-1" in line]
    assert "effvit_plugins.models.layers" in line and "INFO" in line, out  # mmengine's format
    assert "core-record-1" in open(log_file).read()


def test_application_logging_sees_the_record_once(tmp_path):
    log_file = str(tmp_path / "run.log")
    out = run_py(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="APP %(name)s %(message)s")
        import effvit_plugins
        from mmengine.logging import MMLogger
        MMLogger.get_instance("run", log_file={log_file!r})
        assert logging.getLogger("effvit_plugins").propagate
        logging.getLogger("effvit_plugins.models.layers").info("core-record-2")
    """)
    assert out.count("core-record-2") == 1 and "APP effvit_plugins.models.layers core-record-2" in out, out
    assert "core-record-2" in open(log_file).read()  # the run's log file still has it
