"""Bad input found by a new user (issue 6): each is one ``tlops: error:`` line and exit status 2, or works as
documented, and nothing is left half-written.

CLI cases run the installed ``tlops`` console script in subprocesses (all started at once by one fixture, as
each is a fresh Python); library cases call the data functions directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tlops.errors import TlopsError

# --- the CLI cases, run at once ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "file:mlruns", "./mlruns", "/srv/mlruns", "mlruns"])
def test_filesystem_tracking_refused_wherever_a_uri_is_taken(tmp_path: Path, uri: str) -> None:
    # tlops run, register and promote all resolve or check their URI through these (run and promote: CLI cases).
    from tlops.promotion.tracking import check_tracking_server, check_tracking_uri, resolve_tracking_uri

    for check in (check_tracking_uri, check_tracking_server, lambda u: resolve_tracking_uri(u, tmp_path)):
        with pytest.raises(TlopsError, match="filesystem backend, which is in maintenance mode"):
            check(uri)
    for fine in ("sqlite:///x.db", "postgresql://u@h/db", "http://127.0.0.1:5000", "databricks"):
        check_tracking_uri(fine)
    assert resolve_tracking_uri(None, tmp_path).startswith("sqlite:///")


# --- 3. the error line of a failed pipeline, and what a failed run leaves -----------------------------------------


# --- 11. a re-run into the same --output keeps the earlier run's summary --------------------------------------------


# --- 4. files are judged by content, not by extension ---------------------------------------------------------


# --- 6. archive limits ----------------------------------------------------------------------------------------


# --- 8. wrapper folders stripped alike for folders, archives and S3 ---------------------------------------------


# --- 9. CSV rows: absolute paths inside the CSV's folder, http(s) URLs ----------------------------------------------


# --- and: S3 without credentials, for run and prepare-data ----------------------------------------------------------
