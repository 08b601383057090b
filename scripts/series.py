#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""The patches of kernel/patches/, taken apart by file.

A patch there is a `git format-patch`-style file: a header (From:,
Subject:, the message, "---"), then one section per file (an optional
"diff --git" line and extended headers, "--- a/<path>", "+++ b/<path>",
hunks), then perhaps a trailer (format-patch's "-- " signature). Sections
are found by counting each hunk's lines, so a removed line that starts
with "-- " or an added one with "++ " is never taken for a file header.

    series.py paths <patch>
        the tree paths the patch changes, one a line
    series.py filter <patch> <exclude-list>
        the patch without the sections of the paths listed (one a line) in
        <exclude-list>: the hooks into upstream files alone (nothing if
        none is left)
    series.py splice <patch> <path> <section-file>
        replace the section of <path> in <patch> (in place) by the one in
        <section-file> (appended in path order if it had none; an empty
        <section-file> removes it)
    series.py section <path> <old> <new>
        the section that turns file <old> (or /dev/null: a new file) into
        <new>, with <path> as its name: what splice takes
    series.py diff [<file>...]
        how our files (all, or those named, as in the repository:
        kernel/gmemuf.c) differ from their version at the end of the series
    series.py absorb [--into <patch> | --blame] [--dry-run] [<file>...]
        fold those differences into the series, rewriting kernel/patches/
        (see scripts/series.sh)
"""
import os
import re
import subprocess
import sys

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def strip_prefix(p):
    p = p.split("\t")[0].rstrip("\n")
    if p == "/dev/null":
        return None
    return p[2:] if p[:2] in ("a/", "b/") else p


class Patch:
    def __init__(self, text):
        self.head = []      # lines before the first section
        self.sections = []  # [path, [lines]]
        self.tail = []      # lines after the last hunk that start no section
        lines = text.splitlines(keepends=True)
        i, n = 0, len(lines)
        cur = None

        def starts_section(i):
            if lines[i].startswith("diff --git "):
                return True
            return (lines[i].startswith("--- ") and i + 1 < n and
                    lines[i + 1].startswith("+++ "))

        while i < n and not starts_section(i):
            self.head.append(lines[i])
            i += 1
        while i < n:
            if starts_section(i):
                sec = []
                old = new = None
                if lines[i].startswith("diff --git "):
                    m = re.match(r"^diff --git a/(\S+) b/(\S+)", lines[i])
                    if m:
                        old, new = m.group(1), m.group(2)
                    sec.append(lines[i])
                    i += 1
                    # Extended headers, up to the first hunk or next file.
                    while (i < n and not lines[i].startswith("@@") and
                           not lines[i].startswith("diff --git ")):
                        if lines[i].startswith("--- "):
                            old = strip_prefix(lines[i][4:])
                        elif lines[i].startswith("+++ "):
                            new = strip_prefix(lines[i][4:])
                            sec.append(lines[i])
                            i += 1
                            break
                        sec.append(lines[i])
                        i += 1
                else:
                    old = strip_prefix(lines[i][4:])
                    new = strip_prefix(lines[i + 1][4:])
                    sec += lines[i:i + 2]
                    i += 2
                cur = [new or old, sec]
                self.sections.append(cur)
                self.tail = []
                continue
            m = HUNK.match(lines[i])
            if m and cur is not None and not self.tail:
                cur[1].append(lines[i])
                i += 1
                a = int(m.group(2)) if m.group(2) is not None else 1
                b = int(m.group(4)) if m.group(4) is not None else 1
                while (a > 0 or b > 0) and i < n:
                    c = lines[i][:1]
                    if c == " " or lines[i] in ("\n", "\r\n"):
                        a -= 1
                        b -= 1
                    elif c == "-":
                        a -= 1
                    elif c == "+":
                        b -= 1
                    elif c != "\\":
                        sys.exit(f"series.py: malformed hunk at line {i + 1}")
                    cur[1].append(lines[i])
                    i += 1
                while i < n and lines[i].startswith("\\"):
                    cur[1].append(lines[i])
                    i += 1
                continue
            # Anything else after a section: the trailer.
            self.tail.append(lines[i])
            i += 1

    def paths(self):
        return [p for p, _ in self.sections]

    def text(self, exclude=()):
        out = list(self.head)
        for p, sec in self.sections:
            if p not in exclude:
                out += sec
        return "".join(out + self.tail)


def read(path):
    with open(path) as f:
        return f.read()


def section(path, old, new):
    """git diff --no-index of two files, named as <path> in the tree."""
    r = subprocess.run(["git", "-c", "core.quotePath=false", "diff",
                        "--no-index", "--no-color", "--no-ext-diff",
                        "--no-renames", "--full-index", "--src-prefix=a/",
                        "--dst-prefix=b/", old, new],
                       stdout=subprocess.PIPE, text=True)
    if r.returncode not in (0, 1):
        sys.exit("series.py: git diff --no-index failed")
    out = []
    for line in r.stdout.splitlines(keepends=True):
        if line.startswith("diff --git "):
            line = f"diff --git a/{path} b/{path}\n"
        elif line.startswith("--- ") and not line.startswith("--- /dev/null"):
            line = f"--- a/{path}\n"
        elif line.startswith("+++ ") and not line.startswith("+++ /dev/null"):
            line = f"+++ b/{path}\n"
        elif line.startswith("@@"):
            # From here on, hunks: keep them as they are.
            idx = r.stdout.splitlines(keepends=True).index(line)
            out += r.stdout.splitlines(keepends=True)[idx:]
            break
        out.append(line)
    text = "".join(out)
    # --full-index gives whole blob ids; format-patch's are abbreviated.
    text = re.sub(r"^index ([0-9a-f]{12})[0-9a-f]*\.\.([0-9a-f]{12})[0-9a-f]*",
                  r"index \1..\2", text, count=1, flags=re.M)
    return text


TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def die(msg):
    sys.exit(f"series: {msg}")


class Series:
    """The series built as commits (scripts/patches.sh --build)."""

    def __init__(self):
        r = subprocess.run([os.path.join(TOP, "scripts/patches.sh"),
                            "--build"], stdout=subprocess.PIPE, text=True)
        if r.returncode:
            die("scripts/patches.sh --build failed")
        out = r.stdout.split("\n")
        out = [x for x in out if x.strip()]
        self.gitdir = out[0]
        self.commits = [tuple(x.split(" ", 1)) for x in out[1:]]
        self.env = dict(os.environ, GIT_DIR=self.gitdir)
        base = self.git("rev-parse", "refs/heads/base").strip()
        self.chain = [base] + [c for c, _ in self.commits]
        m = subprocess.run([os.path.join(TOP, "scripts/kernel.sh"),
                            "overlay-map"], stdout=subprocess.PIPE,
                           text=True, check=True).stdout
        self.tree_of = {}   # repository file -> tree path
        for line in m.splitlines():
            f, t = line.split()
            self.tree_of[f] = t
        self.whole = {}     # tree path -> patch that adds it whole
        with open(os.path.join(TOP, "kernel/patches/series")) as f:
            for line in f:
                words = line.split("#")[0].split()
                for t in words[1:]:
                    self.whole[t] = words[0]

    def git(self, *args, data=None, ok=(0,)):
        r = subprocess.run(["git", *args], env=self.env, input=data,
                           stdout=subprocess.PIPE)
        if r.returncode not in ok:
            die(f"git {' '.join(args)} failed")
        return r.stdout if data is not None or args[0] == "cat-file" \
            else r.stdout.decode()

    def blob(self, commit, path):
        r = subprocess.run(["git", "rev-parse", "-q", "--verify",
                            f"{commit}:{path}"], env=self.env,
                           stdout=subprocess.PIPE, text=True)
        return r.stdout.strip() or None

    def blame_patch(self, path, old, new, d):
        """The commits (indices in the chain) that last changed the lines
        of @path that the change from @old (its version at the end of the
        series) to @new touches; for an insertion, the lines around it."""
        diff = section(path, tmpfile(d, "bo", old), tmpfile(d, "bn", new))
        nlines = old.count(b"\n")
        want = set()
        cur = None
        for line in diff.splitlines():
            m = HUNK.match(line)
            if m:
                cur = int(m.group(1))   # the old side's next line
                if m.group(2) == "0":
                    cur += 1            # "-a,0": insertion after line a
                continue
            if cur is None or not line:
                continue
            if line[0] == " ":
                cur += 1
            elif line[0] == "-":
                want.add(cur)
                cur += 1
            elif line[0] == "+":
                # An insertion: the lines on either side of it.
                want.update((cur - 1, cur))
        want = {x for x in want if 1 <= x <= nlines}
        if not want:
            return []
        r = subprocess.run(["git", "blame", "--porcelain", "-L",
                            f"{min(want)},{max(want)}", self.chain[-1],
                            "--", path], env=self.env,
                           stdout=subprocess.PIPE, text=True)
        idx = {c: i for i, c in enumerate(self.chain)}
        came = set()
        lineno = None
        for line in r.stdout.splitlines():
            m = re.match(r"^([0-9a-f]{40}) \d+ (\d+)", line)
            if m:
                lineno = int(m.group(2))
                if lineno in want and m.group(1) in idx and idx[m.group(1)]:
                    came.add(idx[m.group(1)])
        return sorted(came)

    def content(self, sha):
        return None if sha is None else self.git("cat-file", "blob", sha)

    def differing(self, files):
        """[(repository file, tree path)] whose final version differs."""
        last = self.chain[-1]
        out = []
        for f, t in sorted(self.tree_of.items()):
            if files and f not in files:
                continue
            have = self.blob(last, t)
            if have is None and t not in self.whole and not \
                    f.startswith(("kernel/", "uapi/", "Kbuild")):
                continue    # not in the series (a selftest, say)
            with open(os.path.join(TOP, f), "rb") as fh:
                want = self.git("hash-object", "--stdin", data=fh.read())
            if have != want.decode().strip():
                out.append((f, t))
        unknown = set(files) - set(self.tree_of)
        if unknown:
            die(f"{', '.join(sorted(unknown))}: none of our files "
                "(scripts/kernel.sh overlay-map)")
        return out


def tmpfile(d, name, data):
    path = os.path.join(d, name)
    if data is None:
        return "/dev/null"
    with open(path, "wb") as f:
        f.write(data)
    return path


def cmd_diff(files):
    s = Series()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for f, t in s.differing(files):
            old = tmpfile(d, "old", s.content(s.blob(s.chain[-1], t)))
            sys.stdout.write(section(t, old, os.path.join(TOP, f)))


def merge(d, ours, base, theirs):
    """git merge-file of three versions: (result, conflicts)."""
    o = tmpfile(d, "ours", ours or b"")
    b = tmpfile(d, "base", base or b"")
    t = tmpfile(d, "theirs", theirs or b"")
    r = subprocess.run(["git", "merge-file", "-p", "-L", "series", "-L",
                        "base", "-L", "repository", o, b, t],
                       stdout=subprocess.PIPE)
    if r.returncode < 0:
        die("git merge-file failed")
    return r.stdout, r.returncode


def cmd_absorb(args):
    into = None
    blame = False
    dry = False
    files = []
    while args:
        a = args.pop(0)
        if a == "--into":
            if not args:
                die("--into needs a patch")
            into = args.pop(0)
        elif a.startswith("--into="):
            into = a[7:]
        elif a == "--blame":
            blame = True
        elif a in ("-n", "--dry-run"):
            dry = True
        else:
            files.append(a)
    s = Series()
    names = [p for _, p in s.commits]
    n = len(names)
    if into is not None:
        m = [i for i, p in enumerate(names) if p == into or
             p.startswith(into + "-") or p.startswith(into)]
        if len(m) != 1:
            die(f"--into {into}: not one patch of the series")
        into = m[0] + 1     # index in chain
    diff = s.differing(files)
    if not diff:
        print("  ABSORB  nothing to do: the series ends where the "
              "repository is")
        return
    import tempfile
    edits = []  # (patch, tree path, section text)
    with tempfile.TemporaryDirectory() as d:
        for f, t in diff:
            if t in s.whole:
                die(f"{f} is added whole by {s.whole[t]}, yet differs: "
                    "run make patches again")
            want = open(os.path.join(TOP, f), "rb").read()
            V = [s.content(s.blob(c, t)) for c in s.chain]
            if V[-1] is None:
                die(f"{f} is in no commit of the series: add it to a "
                    "patch (a new-file diff) or to a line of "
                    "kernel/patches/series")
            touch = [j for j in range(1, n + 1) if V[j] != V[j - 1]]
            k = touch[-1]
            # Where the lines the change touches come from: a hint, or
            # with --blame the target.
            came = s.blame_patch(t, V[n], want, d)
            if came and dry:
                print(f"  BLAME   {f}: the lines it changes come from "
                      + ", ".join(names[j - 1][:4] for j in came))
            tgt = into if into is not None else \
                (max(came) if blame and came else k)
            if V[tgt] is None:
                die(f"{f}: {names[tgt - 1]} comes before the patch that "
                    f"adds it ({names[touch[0] - 1]})")
            W = list(V)
            if tgt >= k:
                for j in range(tgt, n + 1):
                    W[j] = want
            else:
                W[tgt], c = merge(d, V[tgt], V[n], want)
                at = tgt
                for j in range(tgt + 1, n + 1):
                    if c:
                        break
                    if j in touch:
                        W[j], c = merge(d, W[j - 1], V[j - 1], V[j])
                        at = j
                    else:
                        W[j] = W[j - 1]
                if c:
                    out = os.path.join(TOP, os.environ.get("O", "build"),
                                       "series-conflict",
                                       os.path.basename(t))
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    with open(out, "wb") as fh:
                        fh.write(W[at])
                    die(f"""{f}: the change does not carry through the series: {c} conflict(s)
in {names[at - 1]}'s version of {t}; that version, with conflict
markers, is in {out}. Nothing was written. Either
  - fold it into the last patch that changes {f}, where it cannot
    conflict: scripts/series.sh absorb {f}
  - or split the change: keep in {f} only the part that applies to
    {names[at - 1][:4]} (save your file first), run
      scripts/series.sh absorb --into {names[tgt - 1][:4]} {f}
    then put your whole file back and fold the rest into the last patch
    that changes it: scripts/series.sh absorb {f}""")
                if W[n] != want:
                    die(f"{f}: carried through the series, the change does "
                        "not end as the repository's file; fold it into "
                        f"the last patch instead: scripts/series.sh absorb {f}")
            for j in range(1, n + 1):
                if (W[j - 1], W[j]) == (V[j - 1], V[j]) or \
                        (W[j - 1] == W[j] and V[j - 1] == V[j]):
                    continue
                old = tmpfile(d, "a", W[j - 1])
                new = tmpfile(d, "b", W[j])
                sec = section(t, old, new) if W[j] != W[j - 1] else ""
                edits.append((names[j - 1], t, f, sec))
    for p, t, f, sec in edits:
        print(f"  ABSORB  {f} into {p}" + ("" if sec else " (its diff of it goes)"))
    if dry:
        return
    with tempfile.TemporaryDirectory() as d:
        for p, t, f, sec in edits:
            secf = os.path.join(d, "sec")
            with open(secf, "w") as fh:
                fh.write(sec)
            main(["series.py", "splice",
                  os.path.join(TOP, "kernel/patches", p), t, secf])
    left = Series().differing(files)
    if left:
        die("still different after absorbing: " +
            ", ".join(f for f, _ in left))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "paths" and len(argv) == 3:
        for p in Patch(read(argv[2])).paths():
            print(p)
    elif cmd == "filter" and len(argv) == 4:
        exclude = set(read(argv[3]).split())
        p = Patch(read(argv[2]))
        # Nothing at all if nothing is left, which patch(1) would call
        # garbage.
        if any(q not in exclude for q in p.paths()):
            sys.stdout.write(p.text(exclude))
    elif cmd == "splice" and len(argv) == 5:
        pf, path, new = argv[2], argv[3], read(argv[4])
        p = Patch(read(pf))
        secs = Patch(new).sections if new else []
        if new and (len(secs) != 1 or secs[0][0] != path):
            sys.exit(f"series.py: {argv[4]} is not one section of {path}")
        at = [i for i, (q, _) in enumerate(p.sections) if q == path]
        if at:
            p.sections[at[0]:at[0] + 1] = secs
        elif secs:
            # format-patch's order: by path.
            k = 0
            while k < len(p.sections) and p.sections[k][0] < path:
                k += 1
            p.sections[k:k] = secs
        # A patch whose last section went must still end its header with
        # "---" and nothing else: that is kept by head.
        tmp = pf + ".tmp"
        with open(tmp, "w") as f:
            f.write(p.text())
        os.replace(tmp, pf)
    elif cmd == "diff":
        cmd_diff(argv[2:])
    elif cmd == "absorb":
        cmd_absorb(argv[2:])
    elif cmd == "section" and len(argv) == 5:
        sys.stdout.write(section(argv[2], argv[3], argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
