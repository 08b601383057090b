#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""make bench: boot the release kernel once per configuration (QEMU -icount
for the headline figures, plain TCG for the second column), run every mode
of the benchmark in that boot (scripts/vm-bench), and report.

Writes, in --out:
  <config>/console.log, tests.log   the VM's logs
  bench.csv     every run: config, mode, kind, n, round, and the counters
  bench.md      the tables, the ratios and the goals
  bench.png     rate against vCPUs and host threads, one line per mode

and, with --readme, replaces the README's table (between the markers
"<!-- bench-begin -->" and "<!-- bench-end -->") with bench.md.

  bench.py --kernel BZIMAGE --initrd CPIO --list LIST --out DIR
           [--icount SPEC] [--configs icount,tcg] [--bench-args ARGS]
  bench.py --report DIR [--readme README.md]   (report from the logs again)
  bench.py ... --configs icount --profile MODE,...   (make bench-profile)

With --profile, the VM runs each of the modes named alone, under perf
(scripts/vm-bench --profile; the initramfs must have perf), and
profile.txt in --out gets perf's reports; bench.md the rates of those runs.

The benchmark is a measurement: it fails if a mode does not work or the
kernel reports a problem, never because a goal is missed.
"""

import argparse
import csv
import datetime
import os
import statistics
import subprocess
import sys
import time

FIELDS = ["mode", "kind", "n", "round", "pages", "secs", "rate", "pf",
          "exits", "uf_exits", "syscalls", "vcpu_sys", "csw", "p50_us",
          "p99_us", "hcpu_us", "slab_b"]
COUNTERS = ["pf", "exits", "uf_exits", "syscalls", "vcpu_sys", "csw",
            "p50_us", "p99_us", "hcpu_us", "slab_b"]
VCPU_MODES = ["ceiling_anon", "ceiling_gmem", "uffd_missing", "uffd_minor",
              "wait_shared_pwrite", "wait_shared_uring",
              "wait_private_pwrite", "wait_private_uring", "exit_self",
              "exit_handler", "present_plain", "present_armed"]
HOST_MODES = ["host_uffd_missing", "host_gmemuf"]
# The headline gmemuf mode: wait mode, shared memory (what userfaultfd can
# also serve), populated with pwrite.
WAIT = "wait_shared_pwrite"


def parse_log(path):
    """(rows, dpt rows, config) of one VM's tests.log."""
    rows, dpt, config = [], [], {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.strip().replace("\r", "").split(",")
            if parts[0] == "bench" and len(parts) == len(FIELDS) + 1:
                row = dict(zip(FIELDS, parts[1:]))
                for k in FIELDS[2:]:
                    row[k] = float(row[k]) if row[k] != "" else None
                rows.append(row)
            elif parts[0] == "dpt" and len(parts) == 6:
                rate = float(parts[5]) if parts[5] != "failed" else None
                dpt.append({"mode": parts[1], "n": int(parts[3]),
                            "round": int(parts[4]), "rate": rate})
            elif parts[0] == "bench-config" and len(parts) >= 3:
                config[parts[1]] = ",".join(parts[2:])
    return rows, dpt, config


def mean(rows, mode, n, key):
    vals = [r[key] for r in rows if r["mode"] == mode and r["n"] == n
            and r[key] is not None]
    return statistics.mean(vals) if vals else None


def last(rows, mode, n, key):
    """The value of the last round: the steady state, for slab growth."""
    vals = [r for r in rows if r["mode"] == mode and r["n"] == n
            and r[key] is not None]
    return max(vals, key=lambda r: r["round"])[key] if vals else None


def fmt(v, digits=2):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def goals(rows, vcpu_ns, thread_ns):
    """(goal, measured, met) for each of issue 10's goals, at each n."""
    out = []

    def add(name, val, ok, shown):
        out.append((name, shown, "met" if ok else "missed"))

    for n in vcpu_ns:
        w = mean(rows, WAIT, n, "rate")
        for other, want in (("uffd_missing", 2.0), ("uffd_minor", 1.2),
                            ("ceiling_gmem", 0.65), ("exit_handler", 1.3),
                            ("exit_self", 1.0)):
            r = ratio(w, mean(rows, other, n, "rate"))
            if r is not None:
                add(f"{n} vCPU: {WAIT} >= {want}x {other}", r, r >= want,
                    f"{r:.2f}x")
        pf = mean(rows, WAIT, n, "pf")
        if pf is not None:
            add(f"{n} vCPU: 1 KVM page fault per userfault page ({WAIT})",
                pf, pf <= 1.05, f"{pf:.2f} per page")
        for mem in ("shared", "private"):
            r = ratio(mean(rows, f"wait_{mem}_uring", n, "rate"),
                      mean(rows, f"wait_{mem}_pwrite", n, "rate"))
            if r is not None:
                add(f"{n} vCPU: io_uring populate >= pwrite ({mem})", r,
                    r >= 1.0, f"{r:.2f}x")
        r = ratio(mean(rows, "present_armed", n, "rate"),
                  mean(rows, "present_plain", n, "rate"))
        if r is not None:
            add(f"{n} vCPU: armed, all present, within 3% of plain", r,
                r >= 0.97, f"{(r - 1) * 100:+.1f}%")
        s_w = last(rows, WAIT, n, "slab_b")
        s_c = last(rows, "ceiling_gmem", n, "slab_b")
        if s_w is not None and s_c is not None:
            d = s_w - s_c
            add(f"{n} vCPU: slab growth per fault 0 at steady state "
                f"({WAIT}, last round, beyond ceiling_gmem's)", d, d <= 1.0,
                f"{d:+.1f} B/fault ({s_w:.1f} against {s_c:.1f})")
    rs = [ratio(mean(rows, "host_gmemuf", t, "rate"),
                mean(rows, "host_uffd_missing", t, "rate"))
          for t in thread_ns]
    rs = [r for r in rs if r is not None]
    if rs:
        add("host threads: host_gmemuf >= 1.5x host_uffd_missing "
            "(worst thread count)", min(rs), min(rs) >= 1.5,
            f"{min(rs):.2f}x (" + ", ".join(f"{r:.2f}x" for r in rs) + ")")
    return out


def report(results, meta):
    """The markdown report: results is [(config, rows, dpt, vmconf)]."""
    head = results[0]
    rows0 = head[1]
    vcpu_ns = sorted({int(r["n"]) for r in rows0 if r["kind"] == "vcpus"})
    thread_ns = sorted({int(r["n"]) for r in rows0 if r["kind"] == "threads"})
    names = [c for c, *_ in results]
    md = []
    md.append(f"Measured {meta['date']} by `make bench` "
              f"({meta['duration']:.0f} s in all). Configuration: "
              f"{meta['config']}.")
    md.append("")
    md.append("Rate: pages a second, all vCPUs (or host threads) together, "
              "the mean of the rounds; " +
              " and ".join(f"`{c}`" for c in names) + " columns. The "
              "counters, per fault (per page), are from the first "
              f"configuration (`{head[0]}`).")
    md.append("")
    hdr = ["mode", "n"] + [f"rate {c}" for c in names] + \
        ["/uffd MISSING", "/uffd MINOR", "/ceiling", "KVM pf", "exits",
         "uf exits", "handler syscalls", "vCPU syscalls", "ctx switches",
         "p50 µs", "p99 µs", "handler CPU µs", "slab B"]
    md.append("| " + " | ".join(hdr) + " |")
    md.append("|" + "---|" * len(hdr))
    for mode in VCPU_MODES + HOST_MODES:
        host = mode in HOST_MODES
        for n in thread_ns if host else vcpu_ns:
            if mean(rows0, mode, n, "rate") is None:
                continue
            rate = mean(rows0, mode, n, "rate")
            if host:
                um, un, ce = "host_uffd_missing", None, None
            else:
                um, un, ce = "uffd_missing", "uffd_minor", "ceiling_gmem"
            cells = [f"`{mode}`", str(n)]
            cells += [fmt(mean(r, mode, n, "rate"), 0)
                      for _, r, *_ in results]
            cells += [fmt(ratio(rate, mean(rows0, x, n, "rate")))
                      if x else "-" for x in (um, un, ce)]
            for k in COUNTERS:
                v = last(rows0, mode, n, k) if k == "slab_b" else \
                    mean(rows0, mode, n, k)
                cells.append(fmt(v, 1 if k == "slab_b" else 2))
            md.append("| " + " | ".join(cells) + " |")
    md.append("")
    md.append("The tree's own `demand_paging_test` (`-b "
              f"{head[3].get('mib_per_vcpu', '?')}M`), its \"Overall demand "
              "paging rate\", as a cross-check of the userfaultfd and "
              "ceiling rows:")
    md.append("")
    md.append("| demand_paging_test | n | " +
              " | ".join(f"rate {c}" for c in names) + " |")
    md.append("|---|---|" + "---|" * len(names))
    for mode, label in (("ceiling", "without -u"),
                        ("MISSING", "-u MISSING"),
                        ("MINOR", "-u MINOR -s shmem")):
        for n in vcpu_ns:
            cells = []
            for _, _, dpt, _ in results:
                v = [d["rate"] for d in dpt if d["mode"] == mode and
                     d["n"] == n and d["rate"] is not None]
                cells.append(fmt(statistics.mean(v), 0) if v else "-")
            md.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    md.append("")
    for cname, rows, _, _ in results:
        md.append(f"Goals, `{cname}`:")
        md.append("")
        for name, shown, state in goals(rows, vcpu_ns, thread_ns):
            md.append(f"- {state}: {name}: {shown}")
        md.append("")
    return "\n".join(md).rstrip() + "\n"


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench.py: no matplotlib (python3-matplotlib), no plot",
              file=sys.stderr)
        return False
    fig, axes = plt.subplots(len(results), 2, figsize=(13, 5 * len(results)),
                             squeeze=False)
    for row, (cname, rows, _, _) in enumerate(results):
        for col, (kind, modes) in enumerate((("vcpus", VCPU_MODES),
                                             ("threads", HOST_MODES))):
            ax = axes[row][col]
            ns = sorted({int(r["n"]) for r in rows if r["kind"] == kind})
            colors = plt.get_cmap("tab20").colors
            for i, mode in enumerate(modes):
                pts = [(n, mean(rows, mode, n, "rate")) for n in ns]
                pts = [(n, v) for n, v in pts if v is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts],
                            marker="osv^D<>ph*Xd"[i % 12],
                            color=colors[(i * 2) % 20 + (i * 2 >= 20)],
                            label=mode)
            ax.set_xlabel("vCPUs" if kind == "vcpus" else "host threads")
            ax.set_ylabel("pages/s")
            ax.set_yscale("log")
            ax.set_xticks(ns)
            ax.set_title(f"{cname}: rate against "
                         f"{'vCPUs' if kind == 'vcpus' else 'threads'}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def write_csv(results, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config"] + FIELDS)
        for cname, rows, dpt, _ in results:
            for r in rows:
                w.writerow([cname] + [r[k] if r[k] is not None else ""
                                      for k in FIELDS])
            for d in dpt:
                w.writerow([cname, "dpt_" + d["mode"], "vcpus", d["n"],
                            d["round"], "", "", d["rate"]] +
                           [""] * (len(FIELDS) - 6))


def write_profile(log, path):
    """The perf reports of scripts/vm-bench --profile, out of its log."""
    keep, out = False, []
    with open(log, errors="replace") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.startswith("# profile-begin"):
                keep = True
            if keep:
                out.append(line)
            if line.startswith("# profile-end"):
                keep = False
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"  PROFILE {path}")


def update_readme(path, md):
    begin, end = "<!-- bench-begin -->", "<!-- bench-end -->"
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        print(f"bench.py: {path} has no {begin} ... {end}; not updated",
              file=sys.stderr)
        return
    a = text.index(begin) + len(begin)
    b = text.index(end)
    with open(path, "w") as f:
        f.write(text[:a] + "\n" + md + text[b:])


def host_config(args, vmconf, load):
    flavour = vmconf.get("flavour") or \
        ("debug" if "-debug/" in (args.kernel or "") else "release")
    if flavour == "debug":
        flavour = ("DEBUG (lockdep, KASAN: not the figures to compare "
                   "with the release kernel's)")
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        qemu = subprocess.run([args.qemu, "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        qemu = "QEMU ?"
    return (f"host {cpu}, {os.cpu_count()} CPUs, load average "
            f"{load:.1f} at the start; {qemu}, q35, "
            f"-cpu max, 2 vCPUs, 4 GiB, the guest's KVM nested (SVM); "
            f"{flavour} kernel {vmconf.get('kernel', '?')}; "
            f"{vmconf.get('mib_per_vcpu', '?')} MiB per vCPU, "
            f"{vmconf.get('rounds', '?')} rounds per mode; "
            f"configurations: icount = `-icount {args.icount}`, "
            f"tcg = plain TCG (multi-threaded)")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--list")
    ap.add_argument("--out", required=True)
    ap.add_argument("--icount", default="shift=3,sleep=off")
    ap.add_argument("--configs", default="icount,tcg")
    ap.add_argument("--bench-args", default="")
    ap.add_argument("--timeout", type=int, default=1500)
    ap.add_argument("--readme")
    ap.add_argument("--report", action="store_true",
                    help="only report, from the logs in --out")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--profile", default="",
                    help="modes to run under perf, comma-separated")
    args = ap.parse_args()
    if args.profile:
        args.bench_args = f"--profile {args.profile} {args.bench_args}"

    configs = args.configs.split(",")
    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    start = time.monotonic()
    load = os.getloadavg()[0]
    failed = False
    if not args.report:
        for c in configs:
            cmd = [sys.executable, os.path.join(here, "vmtest.py"), "run",
                   "--mode", "bench", "--kernel", args.kernel,
                   "--initrd", args.initrd, "--list", args.list,
                   "--logs", os.path.join(args.out, c),
                   "--timeout", str(args.timeout), "--qemu", args.qemu]
            if c == "icount":
                cmd += ["--icount", args.icount]
            if args.bench_args:
                cmd += ["--append", "gmemuf.bench_args=" +
                        args.bench_args.replace(" ", ":")]
            print(f"  BENCH   {c}", flush=True)
            t0 = time.monotonic()
            if subprocess.run(cmd).returncode:
                failed = True
            print(f"  BENCH   {c}: {time.monotonic() - t0:.0f} s", flush=True)
    duration = time.monotonic() - start

    results = []
    for c in configs:
        log = os.path.join(args.out, c, "tests.log")
        if not os.path.exists(log):
            continue
        if args.profile:
            write_profile(log, os.path.join(args.out, c, "profile.txt"))
        rows, dpt, vmconf = parse_log(log)
        if rows:
            results.append((c, rows, dpt, vmconf))
    if not results:
        print("bench.py: no results", file=sys.stderr)
        return 1
    stamp = os.path.join(args.out, "run")
    if args.report and os.path.exists(stamp):
        with open(stamp) as f:
            duration, config = f.read().split("\n", 1)
        duration = float(duration)
    else:
        config = host_config(args, results[0][3], load)
        with open(stamp, "w") as f:
            f.write(f"{duration:.0f}\n{config}")
    meta = {
        "date": datetime.datetime.fromtimestamp(
            os.path.getmtime(os.path.join(args.out, results[0][0],
                                          "tests.log")),
            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration": duration,
        "config": config.strip(),
    }
    md = report(results, meta)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(md)
    write_csv(results, os.path.join(args.out, "bench.csv"))
    plotted = plot(results, os.path.join(args.out, "bench.png"))
    print(md)
    print(f"  BENCH   {args.out}/bench.csv, bench.md"
          f"{', bench.png' if plotted else ''}")
    if args.readme:
        update_readme(args.readme, md)
    if failed:
        print("bench.py: a benchmark VM failed; its figures are partial",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
