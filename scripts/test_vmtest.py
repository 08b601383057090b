#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Host-side tests of vmtest.py: the console scanner and the result parser,
and of bench.py's report, on the sample logs of scripts/testdata/; and of
cover-letter.py. They need no kernel and no VM."""

import importlib.util
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
import bench  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


def lines(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read().splitlines()


def runlist():
    return vmtest.read_list(os.path.join(DATA, "runlist"))


def statuses(results):
    return [(r.status, r.name) for r in results]


class ScanConsole(unittest.TestCase):
    def scan(self, name):
        return vmtest.scan_console(lines(name))

    def test_clean_boot_has_no_report(self):
        # Includes a "WARNING:" printed by userspace, without a timestamp,
        # and KASAN's and lockdep's boot banners.
        self.assertEqual(self.scan("clean.console"), [])

    def test_warn_is_one_report_blamed_on_its_test(self):
        found = self.scan("warn.console")
        self.assertEqual(len(found), 1)
        kind, text, test = found[0]
        self.assertEqual((kind, test), ("warning", "gmem_canary_test"))
        self.assertIn("virt/kvm/guest_memfd.c:123", text)

    def test_kasan(self):
        self.assertEqual([(k, t) for k, _, t in self.scan("kasan.console")],
                         [("kasan", "guest_memfd_test")])

    def test_lockdep(self):
        self.assertEqual([(k, t) for k, _, t in self.scan("lockdep.console")],
                         [("lockdep", "gmem_canary_test")])

    def test_hung_task(self):
        self.assertEqual([k for k, _, _ in self.scan("hung.console")],
                         ["hung task"])

    def test_kmemleak_after_the_tests(self):
        self.assertEqual([(k, t) for k, _, t in
                          self.scan("kmemleak.console")],
                         [("kmemleak", "kmemleak")])

    def test_rcu_stall_after_a_test(self):
        self.assertEqual([(k, t) for k, _, t in self.scan("rcu.console")],
                         [("rcu stall", "after gmem_canary_test")])

    def test_watchdog_sysrq_dump_is_no_report(self):
        # The examples' watchdog (a passing run of postcopy_stall): sysrq-w
        # with a task blocked on a page, sysrq-l with its NMI backtraces.
        self.assertEqual(self.scan("sysrq.console"), [])

    def test_sleep_in_atomic_oops_and_panic(self):
        self.assertEqual([k for k, _, _ in self.scan("sleep.console")],
                         ["bug", "oops", "panic"])


class Judge(unittest.TestCase):
    def test_clean_run(self):
        res = vmtest.judge(lines("clean.console"), lines("clean.tests"),
                           runlist())
        self.assertEqual(statuses(res), [
            ("pass", "gmem_canary_test: default VM, shared guest_memfd"),
            ("pass", "gmem_canary_test: sw-protected VM, private guest_memfd"),
            ("pass", "guest_memfd_test: global.file_read_write"),
            ("skip", "guest_memfd_test: global.mmap_not_supported"),
            ("pass", "guest_memfd_test: global.create_flags"),
        ])
        out = io.StringIO()
        self.assertEqual(vmtest.summarize(res, out), 0)
        self.assertEqual(out.getvalue().splitlines()[-1],
                         "4 passed, 0 failed, 1 skipped")

    def test_kernel_report_fails_a_passing_run(self):
        res = vmtest.judge(lines("warn.console"), lines("clean.tests"),
                           runlist())
        failed = [r for r in res if r.status == "fail"]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0].name,
                         "kernel warning during gmem_canary_test")
        out = io.StringIO()
        self.assertEqual(vmtest.summarize(res, out), 1)
        tail = out.getvalue().splitlines()
        self.assertEqual(tail[-1], "4 passed, 1 failed, 1 skipped")
        self.assertIn("kernel warning during gmem_canary_test", tail[-2])

    def block(self, body, status="0", name="gmem_canary_test"):
        test = [f"# gmemuf-begin {name}"] + body
        if status is not None:
            test.append(f"# gmemuf-end {name} {status}")
        return vmtest.judge([], test, [(name, 60)])

    def test_not_ok(self):
        res = self.block(["1..2", "ok 1 a", "not ok 2 b"], status="1")
        self.assertEqual(statuses(res), [("pass", "gmem_canary_test: a"),
                                         ("fail", "gmem_canary_test: b")])

    def test_nonzero_exit_without_a_failed_case_fails(self):
        res = self.block(["1..1", "ok 1 a"], status="139")
        self.assertEqual(statuses(res)[-1], ("fail", "gmem_canary_test"))
        self.assertIn("139", res[-1].detail)

    def test_missing_results_fail(self):
        res = self.block(["1..3", "ok 1 a"])
        self.assertEqual(res[-1].status, "fail")
        self.assertIn("1 of 3", res[-1].detail)

    def test_no_tap_uses_exit_status(self):
        self.assertEqual(statuses(self.block(["hello"], "0")),
                         [("pass", "gmem_canary_test")])
        self.assertEqual(statuses(self.block([], "4")),
                         [("skip", "gmem_canary_test")])
        self.assertEqual(statuses(self.block([], "2")),
                         [("fail", "gmem_canary_test")])

    def test_killed_by_timeout(self):
        res = self.block(["1..2", "ok 1 a"], status="137")
        self.assertEqual(res[-1].status, "fail")
        self.assertIn("60 s timeout", res[-1].detail)

    def test_unfinished_and_never_run(self):
        res = vmtest.judge([], ["# gmemuf-begin gmem_canary_test", "ok 1 a"],
                           runlist())
        self.assertEqual(statuses(res), [
            ("pass", "gmem_canary_test: a"),
            ("fail", "gmem_canary_test"),
            ("fail", "guest_memfd_test"),
        ])
        self.assertIn("did not finish", res[1].detail)
        self.assertEqual(res[2].detail, "did not run")

    def test_carriage_returns_from_the_serial_port(self):
        res = vmtest.judge([], ["# gmemuf-begin gmem_canary_test\r",
                                "1..1\r", "ok 1 a\r",
                                "# gmemuf-end gmem_canary_test 0\r"],
                           [("gmem_canary_test", 60)])
        self.assertEqual(statuses(res), [("pass", "gmem_canary_test: a")])


class Repeat(unittest.TestCase):
    """make stress: the list run n times, names NAME.k."""

    def run_of(self, name, status, console_extra=()):
        tests = [f"# gmemuf-begin {name}", f"output of {name}",
                 f"# gmemuf-end {name} {status}"]
        console = [f"[    1.0] gmemuf: begin {name}", *console_extra,
                   f"[    2.0] gmemuf: end {name} {status}"]
        return console, tests

    def test_names(self):
        self.assertEqual(vmtest.repeated([("a", 5), ("b", 7)], 2),
                         [("a.1", 5), ("b.1", 7), ("a.2", 5), ("b.2", 7)])

    def test_counts_and_keeps_the_logs_of_failed_runs(self):
        console, tests = [], []
        for name, status, extra in (
                ("demo.1", "0", ()), ("snap.1", "0", ()),
                ("demo.2", "3", ()),
                ("snap.2", "0", ("[    1.5] WARNING: CPU: 0 PID: 1 at x",)),
                # demo.10 must not be taken for demo.1, nor the reverse.
                ("demo.10", "1", ())):
            c, t = self.run_of(name, status, extra)
            console += c
            tests += t
        lst = vmtest.repeated([("demo", 60), ("snap", 60)], 10)
        res = vmtest.judge(console, tests, lst)
        self.assertEqual(
            {n for n in vmtest.failed_tests(res) if n.startswith("demo")},
            {"demo.2", "demo.10"} | {f"demo.{k}" for k in range(3, 10)})
        self.assertIn("snap.2", vmtest.failed_tests(res))
        self.assertNotIn("snap.1", vmtest.failed_tests(res))

        with tempfile.TemporaryDirectory() as logs:
            out = io.StringIO()
            vmtest.report_repeats(res, lst, 10, console, tests, logs, out)
            got = out.getvalue().splitlines()
            self.assertTrue(got[0].startswith(
                "stress: demo: 1 of 10 runs passed; failed: demo.2, demo.3"))
            self.assertTrue(got[1].startswith(
                "stress: snap: 1 of 10 runs passed; failed: snap.2, snap.3"))
            d = os.path.join(logs, "failures")
            with open(os.path.join(d, "demo.10", "tests.log")) as f:
                self.assertEqual(f.read().splitlines(), [
                    "# gmemuf-begin demo.10", "output of demo.10",
                    "# gmemuf-end demo.10 1"])
            with open(os.path.join(d, "snap.2", "console.log")) as f:
                self.assertIn("WARNING: CPU: 0 PID: 1 at x", f.read())
            self.assertFalse(os.path.exists(os.path.join(d, "demo.1")))


class FailedLogs(unittest.TestCase):
    """What a failed run prints of its failed tests' output."""

    def test_prints_only_the_failed_tests_output(self):
        tests = ["# gmemuf-begin a", "a says fine", "# gmemuf-end a 0",
                 "# gmemuf-begin b"] + [f"b line {i}" for i in range(100)] + \
                ["# gmemuf-end b 1"]
        console = ["[    1.0] gmemuf: begin a", "[    1.1] gmemuf: end a 0",
                   "[    2.0] gmemuf: begin b", "[    2.1] b's kernel line",
                   "[    2.2] gmemuf: end b 1"]
        res = vmtest.judge(console, tests, [("a", 5), ("b", 5)])
        out = io.StringIO()
        vmtest.print_failed_logs(res, console, tests, tail=10, out=out)
        got = out.getvalue()
        self.assertNotIn("a says fine", got)
        self.assertIn("b line 99", got)
        self.assertNotIn("b line 80", got)
        self.assertIn("b's kernel line", got)

    def test_the_kvm_trace_does_not_hide_the_failure(self):
        tests = ["# gmemuf-begin b", "b: FAIL: the reason"] + \
                [f"# kvm: event {i}" for i in range(100)] + \
                ["# gmemuf-end b 1"]
        console = ["[    2.0] gmemuf: begin b", "[    2.2] gmemuf: end b 1"]
        res = vmtest.judge(console, tests, [("b", 5)])
        out = io.StringIO()
        vmtest.print_failed_logs(res, console, tests, tail=10, out=out)
        got = out.getvalue()
        self.assertIn("b: FAIL: the reason", got)
        self.assertIn("# kvm: event 99", got)
        self.assertNotIn("# kvm: event 80", got)


class EarlyEnd(unittest.TestCase):
    """What is said of a VM that ended without init's last word."""

    def explain(self, console, qemu_log_text):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "qemu.log")
            if qemu_log_text is not None:
                with open(path, "w") as f:
                    f.write(qemu_log_text)
            out = io.StringIO()
            vmtest.explain_early_end(0, console, path, out)
            return out.getvalue()

    def test_a_finished_run_says_nothing(self):
        self.assertEqual(self.explain(["[ 9.0] gmemuf: tests end"], ""), "")
        self.assertEqual(self.explain(["[ 9.0] gmemuf: fuzz end 1"], ""), "")

    def test_a_panic_says_it_itself(self):
        self.assertEqual(self.explain(["[ 9.0] Kernel panic - not syncing"],
                                      ""), "")

    def test_a_triple_fault(self):
        got = self.explain(["[ 9.0] gmemuf: fuzz begin"],
                           "CPU Reset (CPU 0)\nRAX=0\nTriple fault\n"
                           "CPU Reset (CPU 0)\nRIP=ffffffff81000000\n")
        self.assertIn("FAIL the VM ended early", got)
        self.assertIn("a triple fault", got)
        self.assertIn("RIP=ffffffff81000000", got)

    def test_qemu_died(self):
        got = self.explain(["[ 9.0] gmemuf: fuzz begin"], None)
        self.assertIn("FAIL the VM ended early", got)
        self.assertNotIn("triple fault ---", got)


class CoverLetter(unittest.TestCase):
    """scripts/cover-letter.py fills format-patch's cover letter."""

    def setUp(self):
        spec = importlib.util.spec_from_file_location(
            "cover_letter", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "cover-letter.py"))
        self.cl = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.cl)

    def test_fills_subject_blurb_and_bench(self):
        readme = ("<!-- bench-begin -->\nMeasured today.\n\n"
                  "| mode | n | rate icount | /uffd MISSING | KVM pf | exits "
                  "| handler syscalls | ctx switches | p50 µs |\n"
                  "|---|---|---|---|---|---|---|---|---|\n"
                  "| `uffd_missing` | 1 | 3,835 | 1.00 | 1.00 | 1.01 | 2.00 "
                  "| 2.00 | 253.63 |\n"
                  "| `uffd_missing` | 4 | 9,999 | 1.00 | 1.00 | 1.01 | 2.00 "
                  "| 2.00 | 253.63 |\n"
                  "<!-- bench-end -->\n")
        with tempfile.TemporaryDirectory() as d:
            paths = [os.path.join(d, n) for n in ("0000", "tpl", "README")]
            texts = ["Subject: [PATCH 0/1] *** SUBJECT HERE ***\n\n"
                     "*** BLURB HERE ***\n\nA (1):\n  x\n",
                     "The subject\nWhy.\n\n@BENCH@\n", readme]
            for path, text in zip(paths, texts):
                with open(path, "w") as f:
                    f.write(text)
            sys.argv = ["cover-letter.py"] + paths
            self.cl.main()
            with open(paths[0]) as f:
                got = f.read()
        self.assertIn("Subject: [PATCH 0/1] The subject\n", got)
        self.assertIn("Why.", got)
        self.assertRegex(got, r"uffd_missing +1 +3,835 +1.00")
        self.assertNotIn("9,999", got)
        self.assertIn("Measured today.", got)
        self.assertIn("A (1):", got)


class BenchReport(unittest.TestCase):
    """bench.py on the serial output of a short `make bench` run."""

    def setUp(self):
        self.rows, self.dpt, self.conf = bench.parse_log(
            os.path.join(DATA, "bench.tests"))

    def test_parse(self):
        # 12 vCPU modes and 2 host modes, at 2 counts each, one round;
        # the program's other output ("Random seed") is not a row.
        self.assertEqual(len(self.rows), 28)
        self.assertEqual(len(self.dpt), 6)
        self.assertEqual(self.conf["mib_per_vcpu"], "2")
        w = [r for r in self.rows if r["mode"] == "wait_shared_pwrite"
             and r["n"] == 1][0]
        self.assertEqual((w["pages"], w["pf"], w["hcpu_us"]),
                         (512, 2.004, 6909.029))
        e = [r for r in self.rows if r["mode"] == "exit_self"][0]
        self.assertIsNone(e["hcpu_us"])
        h = [r for r in self.rows if r["mode"] == "host_gmemuf"][0]
        self.assertIsNone(h["pf"])

    def test_goals_met_and_missed_with_ratios(self):
        g = {name: (shown, state) for name, shown, state in
             bench.goals(self.rows, [1, 2], [1, 2])}
        self.assertEqual(
            g["1 vCPU: wait_shared_pwrite >= 2.0x uffd_missing"],
            ("1.32x", "missed"))
        self.assertEqual(
            g["1 vCPU: armed, all present, within 3% of plain"],
            ("+9.7%", "met"))
        self.assertEqual(
            g["1 vCPU: 1 KVM page fault per userfault page "
              "(wait_shared_pwrite)"], ("2.00 per page", "missed"))
        self.assertEqual(len(g), 21)

    def test_report_and_readme(self):
        md = bench.report([("tcg", self.rows, self.dpt, self.conf)],
                          {"date": "D", "duration": 1, "config": "C"})
        self.assertIn("| `uffd_missing` | 1 | 55 | 1.00 | 0.57 | 0.02 |",
                      md)
        self.assertIn("| -u MISSING | 1 | 120 |", md)
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                            f"bench-readme-{os.getpid()}.md")
        with open(path, "w") as f:
            f.write("a\n<!-- bench-begin -->\nold\n<!-- bench-end -->\nb\n")
        try:
            bench.update_readme(path, "new\n")
            with open(path) as f:
                self.assertEqual(f.read(), "a\n<!-- bench-begin -->\nnew\n"
                                 "<!-- bench-end -->\nb\n")
        finally:
            os.unlink(path)


if __name__ == "__main__":
    prog = unittest.main(verbosity=1, exit=False)
    r = prog.result
    bad = len(r.failures) + len(r.errors)
    print(f"{r.testsRun - bad - len(r.skipped)} passed, {bad} failed, "
          f"{len(r.skipped)} skipped")
    sys.exit(1 if bad else 0)
