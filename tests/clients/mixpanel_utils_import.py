#!/usr/bin/env python3
"""Import an NDJSON file of events into a local Ferry receiver with PyPI `mixpanel-utils`.

    python3 mixpanel_utils_import.py --base-url http://127.0.0.1:PORT \
        --project-id ID --user U --secret S --file events.ndjson

Uses the library's defaults (strict_import=True, 2000-record batches, a thread
pool of cpu_count()*2) and only repoints its `import_api` attribute at
--base-url. The library itself returns nothing from import_events() and only
logs HTTP failures, so this script wraps the instance's per-batch sender to
read each response, then prints one JSON summary line on stdout. Exit status
is 0 only when every event read from the file was reported imported.
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from importlib.metadata import version as pkg_version

from mixpanel_utils import MixpanelUtils


class _CountingHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.errors = 0
        self.warnings = 0

    def emit(self, record):
        if record.levelno >= logging.ERROR:
            self.errors += 1
        else:
            self.warnings += 1


def read_ndjson(path):
    events = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{lineno}: invalid JSON: {e}")
    return events


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, "r", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True, help="receiver base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--project-id", required=True)
    ap.add_argument("--user", required=True, help="service account username")
    ap.add_argument("--secret", required=True, help="service account secret")
    ap.add_argument("--file", required=True, help="NDJSON file of events")
    ap.add_argument("--token", default="ferry-mixpanel-utils",
                    help="project token; the library REQUIRES one for imports and writes it into "
                         "every event's properties.token (default: %(default)s)")
    ap.add_argument("--timezone-offset", type=float, default=0,
                    help="hours; the library subtracts offset*3600 from properties.time (default 0)")
    ap.add_argument("--debug", action="store_true", help="library debug logging (to stderr)")
    args = ap.parse_args()

    data_file = os.path.abspath(args.file)
    events = read_ndjson(data_file)

    mp = MixpanelUtils(
        args.secret,
        token=args.token,
        service_account_username=args.user,
        project_id=args.project_id,
        debug=args.debug,
    )
    # The only supported redirection: request() builds "<import_api>/import?strict=1&project_id=ID".
    mp.import_api = args.base_url.rstrip("/")

    counter = _CountingHandler()
    MixpanelUtils.LOGGER.addHandler(counter)

    lock = threading.Lock()
    stats = {"batches": 0, "batches_ok": 0, "batches_failed": 0, "records_in_batches": 0,
             "imported": 0, "gave_up": 0}
    original_send = mp._send_batch

    def observed_send(base_url, endpoint, batch, retries=0):
        resp = None
        try:
            resp = original_send(base_url, endpoint, batch, retries=retries)
        except BaseException as e:
            # After max_retries 5xx/network failures the library raises a bare
            # BaseException, which _send_batch does not catch; left alone it kills
            # the ThreadPool worker and import_events() never returns. Contain it.
            if type(e) is not BaseException:
                raise
            with lock:
                stats["gave_up"] += 1
        finally:
            # resp stays None when the library swallowed an HTTP 4xx, gave up after
            # retries, or dumped the batch to import_backup.txt.
            ok, imported = False, 0
            if isinstance(resp, str):
                try:
                    body = json.loads(resp)
                    imported = int(body.get("num_records_imported", 0))
                    ok = body.get("status") in ("OK", 1) and imported == len(batch)
                except (ValueError, AttributeError, TypeError):
                    pass
            with lock:
                stats["batches"] += 1
                stats["records_in_batches"] += len(batch)
                stats["imported"] += imported
                stats["batches_ok" if ok else "batches_failed"] += 1
        return resp

    mp._send_batch = observed_send

    # The library drops events lacking time/distinct_id into ./invalid_events.txt and
    # failed batches into ./import_backup.txt (relative to the CWD): keep those out of the repo.
    work_dir = tempfile.mkdtemp(prefix="mixpanel-utils-")
    old_cwd = os.getcwd()
    os.chdir(work_dir)
    started = time.time()
    error = None
    try:
        mp.import_events(events, timezone_offset=args.timezone_offset)
    except BaseException as e:  # the library raises bare BaseException after max retries
        error = f"{type(e).__name__}: {e}"
    finally:
        os.chdir(old_cwd)
    elapsed = time.time() - started

    invalid = count_lines(os.path.join(work_dir, "invalid_events.txt"))
    backed_up = count_lines(os.path.join(work_dir, "import_backup.txt"))
    if not invalid and not backed_up:
        try:
            os.rmdir(work_dir)
            work_dir = None
        except OSError:
            pass

    summary = {
        "client": "mixpanel-utils",
        "version": pkg_version("mixpanel-utils"),
        "file": data_file,
        "sent": len(events),
        "imported": stats["imported"],
        "failed": len(events) - stats["imported"],
        "dropped_invalid": invalid,
        "batches": stats["batches"],
        "batches_ok": stats["batches_ok"],
        "batches_failed": stats["batches_failed"],
        "batches_gave_up": stats["gave_up"],
        "backup_batches": backed_up,
        "library_errors_logged": counter.errors,
        "library_warnings_logged": counter.warnings,
        "seconds": round(elapsed, 3),
        "eps": round(stats["imported"] / elapsed) if elapsed > 0 else None,
    }
    if work_dir:
        summary["work_dir"] = work_dir
    if error:
        summary["error"] = error
    print(json.dumps(summary), flush=True)
    ok = (error is None and stats["imported"] == len(events) and stats["batches_failed"] == 0
          and not invalid and not backed_up)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
