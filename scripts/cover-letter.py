#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Fill the cover letter that `git format-patch --cover-letter` wrote.

    cover-letter.py <0000-cover-letter.patch> <template> <README.md>

The template's first line is the series' subject, the rest its blurb, in
which a line "@BENCH@" becomes the benchmark table of README.md (the block
`make bench` writes), cut to the columns and rows a reviewer needs. The
shortlog and diffstat that format-patch wrote stay as they are.
"""
import re
import sys
import textwrap

ROWS = {
    # mode: the counts (vCPUs or host threads) shown
    "ceiling_gmem": ("1", "2"),
    "uffd_missing": ("1", "2"),
    "uffd_minor": ("1", "2"),
    "wait_shared_pwrite": ("1", "2"),
    "wait_shared_uring": ("1", "2"),
    "wait_private_pwrite": ("1", "2"),
    "exit_self": ("1", "2"),
    "exit_handler": ("1", "2"),
    "host_uffd_missing": ("1", "8"),
    "host_gmemuf": ("1", "8"),
}
COLUMNS = [("mode", "mode"), ("n", "n"), ("rate icount", "pages/s"),
           ("/uffd MISSING", "x MISSING"), ("KVM pf", "KVM pf"),
           ("exits", "exits"), ("handler syscalls", "syscalls"),
           ("ctx switches", "ctxsw"), ("p50 µs", "p50 us")]


def bench_text(readme):
    m = re.search(r"<!-- bench-begin -->(.*?)<!-- bench-end -->", readme,
                  re.S)
    if not m:
        return "(No benchmark run is recorded in README.md.)"
    block = m.group(1)
    measured = re.search(r"^Measured (.*?)$", block, re.M)
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("| mode | n |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    idx = [head.index(c) for c, _ in COLUMNS]
    table = [[t for _, t in COLUMNS]]
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if cells[1] in ROWS.get(cells[0], ()):
            table.append([cells[i] for i in idx])
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    out = ["The benchmark (make bench: one boot of a release kernel, each",
           "mode side by side with userfaultfd, guest time counted in",
           "instructions by QEMU's -icount; per fault: KVM page faults, VM",
           "exits, handler syscalls, context switches, the guest's p50",
           "latency):", ""]
    for r in table:
        out.append("  " + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if measured:
        out += [""] + textwrap.wrap("Measured " + measured.group(1).replace("`", ""),
                                    72)
    return "\n".join(out)


def main():
    path, template, readme = sys.argv[1:4]
    with open(template) as f:
        subject, _, blurb = f.read().partition("\n")
    with open(readme) as f:
        bench = bench_text(f.read())
    blurb = blurb.strip("\n").replace("@BENCH@", bench)
    with open(path) as f:
        letter = f.read()
    if "*** SUBJECT HERE ***" not in letter or "*** BLURB HERE ***" not in letter:
        sys.exit(f"cover-letter.py: {path} is not format-patch's cover letter")
    letter = letter.replace("*** SUBJECT HERE ***", subject.strip())
    letter = letter.replace("*** BLURB HERE ***", blurb)
    with open(path, "w") as f:
        f.write(letter)


if __name__ == "__main__":
    main()
