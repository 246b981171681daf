"""The sweep's stdout sorts what Ray's driver prints for the cluster into ray.log
(study/ray_start.py); the real sweep's case is in tests/test_executors.py."""

from __future__ import annotations

import io
import logging
import threading

from study.ray_start import ClusterLinesToLog


def test_cluster_lines_from_rays_thread_go_to_the_log_and_the_rest_passes(tmp_path):
    terminal = io.StringIO()
    logger = logging.getLogger("test-ray-start")
    logger.propagate = False
    handler = logging.FileHandler(tmp_path / "ray.log")
    logger.addHandler(handler)
    stdout = ClusterLinesToLog(terminal, logger)

    def ray_thread():  # print() writes the text, then the newline, in two calls
        print("\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started",
              file=stdout)
        stdout.write("(gcs_server) a node died\nsomething else from a thread\n")
        stdout.write("(raylet) half a li")
        stdout.write("ne\n")

    thread = threading.Thread(target=ray_thread)
    thread.start()
    thread.join()
    print("[0:00:07] trials 0/11 done", file=stdout)
    stdout.write("no newline yet")  # the sweep's own output is never held back
    assert terminal.getvalue().endswith("no newline yet")
    stdout.write(" (raylet) in the middle of a line is text\n")
    # What Ray held back to deduplicate comes from the main thread at shutdown.
    print("\x1b[33m(raylet)\x1b[0m WARNING: 10 PYTHON worker processes", file=stdout)
    handler.close()

    assert terminal.getvalue() == ("something else from a thread\n"
                                   "[0:00:07] trials 0/11 done\nno newline yet"
                                   " (raylet) in the middle of a line is text\n")
    assert (tmp_path / "ray.log").read_text().splitlines() == [
        "(raylet) WARNING: 8 PYTHON worker processes have been started",
        "(gcs_server) a node died", "(raylet) half a line",
        "(raylet) WARNING: 10 PYTHON worker processes"]
    assert stdout.encoding == terminal.encoding  # the rest of the stream's interface
