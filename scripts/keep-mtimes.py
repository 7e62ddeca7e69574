#!/usr/bin/env python3
"""Gives a fresh checkout's unchanged files the times they had at the last run.

cargo decides whether a workspace crate must be built again from its source
files' modification times, and a fresh checkout gives every file a new one:
with a kept target/, every crate of the workspace would still be built again
in every profile. This script keeps, in target/source-mtimes.json, each
tracked file's content hash and modification time as the last run saw them.
A file whose content is the same as then gets that time back; any other file
gets the current time, newer than every build output, so cargo builds what
uses it (the time a checkout gave it may be older than an output built from
other content in between, in a target/ two checkouts share).

Only the last run's state is kept, so a time is given back only to the
content it belonged to, and every build output newer than that time was
built from that content, as long as no other checkout with other content
builds in this target/ between two runs.

    scripts/keep-mtimes.py        restore, then record the files as they are
"""

import hashlib
import json
import os
import subprocess
import sys


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.path.join(root, "target")
    record = os.path.join(target, "source-mtimes.json")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True
    ).stdout
    try:
        with open(record, encoding="utf-8") as f:
            old = json.load(f)
    except FileNotFoundError:
        old = {}
    except (OSError, ValueError) as e:
        print(f"keep-mtimes: ignoring an unreadable {record}: {e}", file=sys.stderr)
        old = {}

    new, restored, fresh = {}, 0, 0
    for raw in listed.split(b"\0"):
        if not raw:
            continue
        name = os.fsdecode(raw)
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue
        mtime = st.st_mtime_ns
        prev = old.get(name)
        if isinstance(prev, list) and len(prev) == 2 and prev[0] == digest:
            if prev[1] != mtime:
                os.utime(path, ns=(st.st_atime_ns, prev[1]), follow_symlinks=False)
                mtime = prev[1]
                restored += 1
        else:
            os.utime(path, None, follow_symlinks=False)
            mtime = os.lstat(path).st_mtime_ns
            fresh += 1
        new[name] = [digest, mtime]

    os.makedirs(target, exist_ok=True)
    tmp = record + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(new, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, record)
    print(
        f"keep-mtimes: {restored} unchanged files got their earlier times back, "
        f"{fresh} changed or new files get the current time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
