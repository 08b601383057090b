#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Boot the test kernel in QEMU, run the tests inside, and judge the run.

The VM's /init (scripts/vm-init) runs each test of /tests/list and writes
its output, bracketed by markers, to the second serial port; the kernel
console goes to the first. This script keeps both in files, turns the test
output into results (TAP where a test prints it, the exit status where it
does not), and scans the whole console for kernel reports: any WARN, BUG,
Oops, KASAN or UBSAN report, lockdep splat, hung task, RCU stall, panic or
kmemleak report fails the run, and is blamed on the test that was running
(kmemleak's, from the scan after the last test, on "kmemleak").

It ends with one line, "N passed, N failed, N skipped", and exits 1 if
anything failed.

With --repeat N (make stress), the VM runs the list N times, the k-th run
of test NAME being NAME.k; a line per test says how many of its runs
passed, and the logs of each failed run are kept in DIR/failures/NAME.k/.

  vmtest.py run --kernel BZIMAGE --initrd CPIO --list LIST --logs DIR
  vmtest.py judge --console FILE --tests FILE --list LIST
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time

# A printk line on the console: "[   12.345678] text". Only these are
# scanned, so that a test printing "WARNING:" cannot fail the run by itself.
PRINTK = re.compile(r"\[\s*\d+\.\d+\]\s?(?:\[\s*[CT]\d+\]\s?)?(.*)")

# What the debug kernel prints when something is wrong. Each report starts
# with one of these; the lines after it (the trace) are not matched again.
REPORTS = [
    ("lockdep", re.compile(r"possible (circular|recursive) locking|"
                           r"inconsistent lock state|"
                           r"suspicious RCU usage|"
                           r"lockdep is turned off")),
    ("kasan", re.compile(r"KASAN:")),
    ("ubsan", re.compile(r"UBSAN:")),
    ("list corruption", re.compile(r"list_(add|del) corruption")),
    ("warning", re.compile(r"^WARNING:|^------------\[ cut here \]")),
    ("bug", re.compile(r"^BUG:|^kernel BUG at")),
    ("oops", re.compile(r"^Oops|^general protection fault")),
    ("hung task", re.compile(r"^INFO: task .* blocked for more than")),
    ("rcu stall", re.compile(r"rcu.*detected stall")),
    ("panic", re.compile(r"^Kernel panic")),
    ("kmemleak", re.compile(r"^kmemleak: \d+ new suspected memory leaks")),
]

MARK_BEGIN = re.compile(r"^# gmemuf-begin (\S+)")
MARK_END = re.compile(r"^# gmemuf-end (\S+) (\S+)")
KMSG_BEGIN = re.compile(r"gmemuf: begin (\S+)")
KMSG_END = re.compile(r"gmemuf: end (\S+)(?: (\S+))?")
TAP = re.compile(r"^(not )?ok\s+(\d+)\s*(?:-\s*)?(.*?)\s*$")
TAP_DIRECTIVE = re.compile(r"^(.*?)\s*#\s*(SKIP|TODO|XFAIL)\b\s*(.*)$", re.I)
TAP_PLAN = re.compile(r"^1\.\.(\d+)")
KSFT_SKIP = 4


class Result:
    def __init__(self, status, name, detail=""):
        self.status = status  # "pass", "fail" or "skip"
        self.name = name
        self.detail = detail

    def line(self):
        tag = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}[self.status]
        s = f"{tag} {self.name}"
        return f"{s}: {self.detail}" if self.detail else s

    def __repr__(self):
        return f"Result({self.status!r}, {self.name!r}, {self.detail!r})"


def read_list(path):
    """The run list: '<name> <timeout> <command...>' lines."""
    tests = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, timeout = line.split()[:2]
            tests.append((name, int(timeout)))
    return tests


def scan_console(lines):
    """Kernel reports in the console, as (kind, text, test) tuples.

    A report is blamed on the test between whose begin and end markers it
    was printed, on "boot" before the first, or on "after <test>".
    """
    found = []
    current = "boot"
    for raw in lines:
        m = PRINTK.search(raw)
        if not m:
            continue
        text = m.group(1).strip()
        b = KMSG_BEGIN.search(text)
        if b:
            current = b.group(1)
            continue
        e = KMSG_END.search(text)
        if e:
            current = "after " + e.group(1)
            continue
        for kind, pattern in REPORTS:
            if pattern.search(text):
                found.append((kind, text, current))
                break
    # A WARN prints "cut here" and then "WARNING: ...": report it once.
    out = []
    for i, (kind, text, test) in enumerate(found):
        if text.startswith("------------[ cut here ]") and i + 1 < len(found) \
                and found[i + 1][0] == "warning":
            continue
        out.append((kind, text, test))
    return out


def parse_block(name, lines, status, timeout):
    """Results of one test from its output and exit status."""
    results = []
    plan = None
    for line in lines:
        p = TAP_PLAN.match(line)
        if p:
            plan = int(p.group(1))
            continue
        m = TAP.match(line)
        if not m:
            continue
        failed, desc = bool(m.group(1)), m.group(3)
        d = TAP_DIRECTIVE.match(desc)
        directive = ""
        if d:
            desc, directive, reason = d.group(1), d.group(2).upper(), d.group(3)
        case = f"{name}: {desc}" if desc else f"{name}: #{m.group(2)}"
        if directive == "SKIP":
            results.append(Result("skip", case, reason))
        elif directive in ("TODO", "XFAIL"):
            results.append(Result("pass", case, directive.lower()))
        else:
            results.append(Result("fail" if failed else "pass", case))

    any_failed = any(r.status == "fail" for r in results)
    if status is None:
        results.append(Result("fail", name, "did not finish: the VM stopped"))
    elif status == "137":
        results.append(Result("fail", name,
                              f"killed: past its {timeout} s timeout"))
    elif not results:
        if status == "0":
            results.append(Result("pass", name))
        elif status == str(KSFT_SKIP):
            results.append(Result("skip", name, "skipped as a whole"))
        else:
            results.append(Result("fail", name, f"exit status {status}"))
    elif status not in ("0", str(KSFT_SKIP)) and not any_failed:
        results.append(Result("fail", name,
                              f"exit status {status} after its results"))
    elif plan is not None and len(results) < plan and not any_failed:
        results.append(Result("fail", name,
                              f"{len(results)} of {plan} planned results"))
    return results


def judge(console_lines, test_lines, tests):
    """All results of a run: the tests', then one per kernel report."""
    blocks = {}
    cur = None
    for raw in test_lines:
        line = raw.rstrip("\r\n").replace("\r", "")
        b = MARK_BEGIN.match(line)
        if b:
            cur = b.group(1)
            blocks[cur] = {"lines": [], "status": None}
            continue
        e = MARK_END.match(line)
        if e and e.group(1) in blocks:
            blocks[e.group(1)]["status"] = e.group(2)
            cur = None
            continue
        if cur:
            blocks[cur]["lines"].append(line)

    results = []
    for name, timeout in tests:
        if name not in blocks:
            results.append(Result("fail", name, "did not run"))
            continue
        blk = blocks[name]
        results.extend(parse_block(name, blk["lines"], blk["status"], timeout))

    for kind, text, test in scan_console(console_lines):
        results.append(Result("fail", f"kernel {kind} during {test}", text))
    return results


def repeated(tests, n):
    """The run list of a VM that runs it n times (scripts/vm-init)."""
    return [(f"{name}.{k}", timeout) for k in range(1, n + 1)
            for name, timeout in tests]


def failed_tests(results):
    """The names of the tests that failed, or had a kernel report blamed on
    them, whether while they ran or after."""
    names = set()
    for r in results:
        if r.status != "fail":
            continue
        m = re.match(r"kernel .* during (?:after )?(\S+)$", r.name)
        names.add(m.group(1) if m else r.name.split(":")[0])
    return names


def test_logs(name, console_lines, test_lines):
    """The lines of one test in the console (between its kmsg markers) and
    in the tests' log (between its own)."""
    def between(lines, begin, end):
        out, inside = [], False
        for line in lines:
            if begin(line):
                inside = True
            if inside:
                out.append(line)
                if end(line):
                    break
        return out

    console = between(
        console_lines,
        lambda l: re.search(rf"gmemuf: begin {re.escape(name)}\s*$", l),
        lambda l: re.search(rf"gmemuf: end {re.escape(name)}( |$)", l))
    tests = between(
        test_lines,
        lambda l: l.rstrip() == f"# gmemuf-begin {name}",
        lambda l: l.startswith(f"# gmemuf-end {name} "))
    return console, tests


def report_repeats(results, tests, n, console_lines, test_lines, logs,
                   out=sys.stdout):
    """A line per test of a repeated list: how many of its n runs passed;
    the logs of each failed run in logs/failures/NAME.k/."""
    failed = failed_tests(results)
    bases = []
    for name, _ in tests:
        base = name.rsplit(".", 1)[0]
        if base not in bases:
            bases.append(base)
    for base in bases:
        bad = [f"{base}.{k}" for k in range(1, n + 1)
               if f"{base}.{k}" in failed]
        line = f"stress: {base}: {n - len(bad)} of {n} runs passed"
        print(line + (f"; failed: {', '.join(bad)}" if bad else ""), file=out)
        for name in bad:
            d = os.path.join(logs, "failures", name)
            os.makedirs(d, exist_ok=True)
            console, tlines = test_logs(name, console_lines, test_lines)
            for fname, text in (("console.log", console),
                                ("tests.log", tlines)):
                with open(os.path.join(d, fname), "w") as f:
                    f.write("\n".join(text) + "\n")
    if failed:
        print(f"failed runs' logs: {os.path.join(logs, 'failures')}/",
              file=out)


def print_failed_logs(results, console_lines, test_lines, tail=60,
                      out=sys.stdout):
    """The end of each failed test's own output, and its kernel lines, so
    that a failure in CI can be understood from what CI prints."""
    for name in sorted(failed_tests(results)):
        console, tlines = test_logs(name, console_lines, test_lines)
        if not console and not tlines:
            continue
        # The KVM trace that vm-init appends would crowd out the test's
        # own last words (its failure message): print them apart.
        own = [l for l in tlines if not l.startswith("# kvm:")]
        kvm = [l for l in tlines if l.startswith("# kvm:")]
        print(f"--- {name}: last {tail} lines of its output ---", file=out)
        print("\n".join(own[-tail:]), file=out)
        if kvm:
            print(f"--- {name}: last {tail} KVM events ---", file=out)
            print("\n".join(kvm[-tail:]), file=out)
        print(f"--- {name}: last {tail} kernel lines ---", file=out)
        print("\n".join(console[-tail:]), file=out)
        print("---", file=out)


def summarize(results, out=sys.stdout):
    for r in results:
        if r.status != "pass" or os.environ.get("VERBOSE"):
            print(r.line(), file=out)
    failed = [r for r in results if r.status == "fail"]
    n = {s: sum(1 for r in results if r.status == s)
         for s in ("pass", "fail", "skip")}
    if failed:
        names = sorted({r.name.split(":")[0] for r in failed})
        print("failed: " + ", ".join(names), file=out)
    print(f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped",
          file=out)
    return 1 if failed else 0


def qemu_command(args, test_log):
    # no5lvl: Linux 7.3 resets its CPUID table during identify_cpu(), and an
    # interrupt taken meanwhile (the timer, late under a loaded TCG) sees
    # pgtable_l5_enabled() false, so KASAN takes the 5-level direct map for
    # wild memory and reports it. Four levels are all the tests need.
    # kvm_amd.vgif=0: with KVM's virtual GIF on, QEMU's TCG (7.2 and 10.2
    # alike) now and then ran a nested guest with its host's state: the
    # test VM's RIP after VMRUN, CR3 and IDT in the nested vCPU (the fuzzer
    # saw it loop or triple fault), and twice the test VM itself triple
    # faulted. 5 of 9 fuzzer runs with vCPUs went wrong so, none of 6 with
    # vgif=0 (2026-12-02). Nothing the tests need uses it.
    append = ["console=ttyS0", "panic=-1", "loglevel=6", "no5lvl",
              "kvm_amd.vgif=0",
              f"gmemuf.mode={args.mode}",
              f"gmemuf.timeout_scale={args.timeout_scale}"]
    if args.only:
        append.append(f"gmemuf.only={args.only}")
    if args.repeat:
        append.append(f"gmemuf.repeat={args.repeat}")
    if args.append:
        append.append(args.append)
    # -icount: QEMU counts instructions for its clock (one vCPU thread),
    # so that timings depend on the guest's work rather than the host's load.
    icount = ["-icount", args.icount] if getattr(args, "icount", None) else []
    return [args.qemu, "-M", "q35", "-cpu", "max", "-smp", "2", "-m", "4G",
            "-nographic", "-no-reboot", "-monitor", "none",
            "-nic", "none"] + icount + [
            # The CPU's state at each reset: with -no-reboot, the last one
            # is that of a triple fault, or of a reboot the VM asked for.
            "-d", "cpu_reset", "-D", os.path.join(args.logs, "qemu.log"),
            "-kernel", args.kernel, "-initrd", args.initrd,
            "-append", " ".join(append),
            "-serial", "stdio", "-serial", f"file:{test_log}"]


def explain_early_end(returncode, console, qemu_log, out=sys.stdout):
    """A VM that ended without init's last word (a triple fault, which
    -no-reboot turns into an exit, or QEMU's own death): say so, with the
    CPU state QEMU logged at the reset."""
    if any(re.search(r"gmemuf: (tests|demo|bench|fuzz|soak) end", line)
           for line in console):
        return
    if any("reboot: Restarting system" in line or "Kernel panic" in line
           for line in console[-100:]):
        return
    print(f"FAIL the VM ended early: QEMU exit status {returncode}, no panic "
          f"or reboot on its console (a triple fault, or QEMU died)",
          file=out)
    try:
        with open(qemu_log, errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return
    # QEMU logs "Triple fault" (-d cpu_reset) before it resets, or, with
    # -no-reboot, exits; then the state of the CPUs as they reset.
    if any("Triple fault" in line for line in lines):
        print(f"--- {qemu_log}: a triple fault ---", file=out)
        at = max(i for i, line in enumerate(lines) if "Triple fault" in line)
        print("\n".join(lines[max(0, at - 5):at + 40]), file=out)


def run(args):
    os.makedirs(args.logs, exist_ok=True)
    console_log = os.path.join(args.logs, "console.log")
    test_log = os.path.join(args.logs, "tests.log")
    for f in (console_log, test_log):
        if os.path.exists(f):
            os.unlink(f)
    tests = read_list(args.list)
    if args.only:
        tests = [t for t in tests if args.only in t[0]]
    if args.repeat:
        tests = repeated(tests, args.repeat)
        shutil.rmtree(os.path.join(args.logs, "failures"), ignore_errors=True)
    cmd = qemu_command(args, test_log)
    with open(os.path.join(args.logs, "qemu.cmd"), "w") as f:
        f.write(" ".join(cmd) + "\n")

    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def pump():
        # The demo's (or fuzzer's) own output, not the firmware's before it.
        demo_begun = False
        with open(console_log, "wb") as log:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                m = PRINTK.search(line)
                text = m.group(1) if m else ""
                e = KMSG_END.search(text)
                if f"gmemuf: {args.mode} begin" in text:
                    demo_begun = True
                if args.mode == "bench" and re.search(r"gmemuf: bench ", text):
                    print(f"[{time.monotonic() - start:6.1f}s] {text}",
                          flush=True)
                if args.mode in ("demo", "fuzz", "soak") and not m:
                    if demo_begun:
                        print(line, flush=True)
                elif e and e.group(2):
                    st = {"0": "ok", "4": "skip"}.get(e.group(2),
                                                      "status " + e.group(2))
                    print(f"[{time.monotonic() - start:6.1f}s] "
                          f"{e.group(1)}: {st}", flush=True)
                elif any(p.search(text) for _, p in REPORTS):
                    print(f"[{time.monotonic() - start:6.1f}s] kernel: {text}",
                          flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    reader.join(timeout=10)

    with open(console_log, errors="replace") as f:
        console = f.read().splitlines()
    if not timed_out:
        explain_early_end(proc.returncode, console,
                          os.path.join(args.logs, "qemu.log"))
    try:
        with open(test_log, errors="replace") as f:
            test_lines = f.read().splitlines()
    except FileNotFoundError:
        test_lines = []

    if args.mode in ("demo", "bench", "fuzz", "soak"):
        ok = any(f"gmemuf: {args.mode} end 0" in line for line in console)
        reports = scan_console(console)
        for kind, text, _ in reports:
            print(f"FAIL kernel {kind}: {text}")
        if timed_out:
            print(f"FAIL the {args.mode} VM did not finish in "
                  f"{args.timeout} s")
        elif not ok:
            print(f"FAIL the {args.mode} did not end with status 0 "
                  f"(logs: {console_log}, {test_log})")
        return 0 if ok and not reports and not timed_out else 1

    results = judge(console, test_lines, tests)
    finished = any(line.startswith("# gmemuf-done") for line in test_lines)
    if timed_out:
        results.append(Result("fail", "vm",
                              f"did not finish in {args.timeout} s, killed"))
    elif not finished:
        results.append(Result("fail", "vm", "stopped before the tests ended"))
    if timed_out or not finished:
        print("--- last console lines ---")
        print("\n".join(console[-25:]))
        print("---")
    if not args.repeat:
        print_failed_logs(results, console, test_lines)
    print(f"logs: {console_log} (console), {test_log} (tests)")
    if args.repeat:
        report_repeats(results, tests, args.repeat, console, test_lines,
                       args.logs)
    return summarize(results)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="boot the VM and run the tests")
    r.add_argument("--kernel", required=True)
    r.add_argument("--initrd", required=True)
    r.add_argument("--list", required=True, help="the run list")
    r.add_argument("--logs", required=True, help="directory for the logs")
    r.add_argument("--timeout", type=int, default=1800,
                   help="seconds for the whole VM run")
    r.add_argument("--timeout-scale", type=int, default=1)
    r.add_argument("--only", help="run the tests whose name contains this")
    r.add_argument("--repeat", type=int, default=0,
                   help="run the list this many times (make stress)")
    r.add_argument("--mode", default="test", choices=("test", "demo", "bench", "fuzz", "soak"))
    r.add_argument("--icount", help="QEMU's -icount, e.g. shift=3,sleep=off")
    r.add_argument("--append", help="more kernel command line")
    r.add_argument("--qemu", default="qemu-system-x86_64")
    j = sub.add_parser("judge", help="judge the logs of a finished run")
    j.add_argument("--console", required=True)
    j.add_argument("--tests", required=True)
    j.add_argument("--list", required=True)
    args = ap.parse_args()

    if args.cmd == "run":
        return run(args)
    with open(args.console, errors="replace") as f:
        console = f.read().splitlines()
    with open(args.tests, errors="replace") as f:
        test_lines = f.read().splitlines()
    return summarize(judge(console, test_lines, read_list(args.list)))


if __name__ == "__main__":
    sys.exit(main())
