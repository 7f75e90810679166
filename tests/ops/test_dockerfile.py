"""The container image's Dockerfile, checked without a container engine (none runs here):
dockerfilelint (npm) finds nothing, the structure is what docs/deployment.md promises
(multi-stage on Debian 12 slim, non-root, the binary alone in the final stage), and every shared
library the built binary needs directly comes from a package the final stage installs."""

import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOCKERFILE = os.path.join(REPO, "Dockerfile")


def bridge_bin():
    env = os.environ.get("WSBRIDGE_BIN")
    return os.path.abspath(env) if env else os.path.join(REPO, "build", "wsbridge")


def stages():
    """[(base image, [instructions])] with line continuations joined."""
    text = open(DOCKERFILE).read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            out.append((rest.split()[0], []))
        else:
            out[-1][1].append((op.upper(), rest.strip()))
    return out


def apt_packages(instrs):
    pkgs = set()
    for op, rest in instrs:
        if op == "RUN":
            for m in re.finditer(r"apt-get install ((?:-\S+\s+)*)([^&]+)", rest):
                pkgs |= set(m.group(2).split())
    return pkgs


def test_dockerfilelint():
    lint = os.path.join(HERE, "node_modules", ".bin", "dockerfilelint")
    assert os.path.exists(lint), "npm packages missing: scripts/setup.sh runs `npm ci` in tests/ops"
    r = subprocess.run([lint, "-j", DOCKERFILE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    import json
    report = json.loads(r.stdout)
    assert report["totalIssues"] == 0, r.stdout
    # The linter does report problems: a bare `FROM` without a tag and a sudo.
    bad = "FROM debian\nRUN sudo apt-get install -y curl\n"
    r = subprocess.run([lint, "-j", bad], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and json.loads(r.stdout)["totalIssues"] >= 2, r.stdout


def test_multi_stage_debian12_slim_non_root():
    st = stages()
    assert len(st) == 2
    assert [base for base, _ in st] == ["debian:bookworm-slim", "debian:bookworm-slim"]
    final = st[1][1]
    users = [rest for op, rest in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert int(users[-1].split(":")[0]) >= 1000
    copies = [rest for op, rest in final if op == "COPY"]
    assert copies == ["--from=build /src/build/wsbridge /usr/local/bin/wsbridge"], copies
    entry = [rest for op, rest in final if op == "ENTRYPOINT"]
    assert entry == ['["/usr/local/bin/wsbridge"]']  # exec form: wsbridge is PID 1, gets SIGTERM
    # No compiler, headers or build tools in the final image.
    pkgs = apt_packages(final)
    assert not [p for p in pkgs if p.endswith("-dev") or p in ("build-essential", "cmake", "gcc")]
    assert any("rm -rf /var/lib/apt/lists" in rest for op, rest in final if op == "RUN")


def test_runtime_packages_cover_the_binary():
    binary = bridge_bin()
    if not os.path.exists(binary):
        pytest.skip("wsbridge not built")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                        subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                                       check=True).stdout)
    # A sanitizer build (the CI's ASan pass) links its runtime too; the image is a Release build.
    needed = [n for n in needed if not n.startswith(("libasan", "libubsan", "libtsan", "liblsan"))]
    assert needed
    final = apt_packages(stages()[1][1])
    missing = []
    for lib in needed:
        path = subprocess.run(["sh", "-c", f"ldconfig -p | awk '/^\\t{lib} .*x86-64/ {{print $NF; exit}}'"],
                              capture_output=True, text=True).stdout.strip()
        assert path, lib
        owner = ""
        real = os.path.realpath(path)
        # usrmerge: dpkg may know the file under /lib or under /usr/lib.
        for cand in (path, real, real.replace("/usr/lib/", "/lib/", 1),
                     real.replace("/lib/", "/usr/lib/", 1)):
            r = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0]
                break
        assert owner, (lib, path)
        if owner not in final and owner != "libc6":  # libc6 is in every Debian image
            missing.append((lib, owner))
    assert not missing, missing


def test_build_stage_copies_every_input_of_the_build():
    """Every path CMakeLists.txt reads for the wsbridge target (source globs, embedded assets)
    is inside something the build stage COPYs. Tests, tools and bench are optional there."""
    cmake = open(os.path.join(REPO, "CMakeLists.txt")).read()
    needed = set(re.findall(r"\$\{CMAKE_SOURCE_DIR\}/([A-Za-z0-9_./-]+)", cmake))
    glob = re.search(r"file\(GLOB WSB_SOURCES CONFIGURE_DEPENDS([^)]*)\)", cmake).group(1)
    needed |= set(glob.split())
    needed = {p for p in needed if not p.startswith(("tests/", "tools/", "bench/"))}
    copied = [rest.split()[0] for op, rest in stages()[0][1] if op == "COPY"]
    missing = [p for p in sorted(needed)
               if not any(p == c.rstrip("/") or p.startswith(c.rstrip("/") + "/") for c in copied)]
    assert not missing, (missing, copied)
    assert needed, "no inputs found in CMakeLists.txt"


def test_build_stage_configures_without_test_dependencies(tmp_path):
    """The build stage runs `cmake -DWSB_TESTS=OFF`: it must not need cmocka, Python or node."""
    st = stages()
    run = " ".join(rest for op, rest in st[0][1] if op == "RUN" and "cmake -S" in rest)
    assert "-DWSB_TESTS=OFF" in run
    r = subprocess.run(["cmake", "-S", REPO, "-B", str(tmp_path / "b"), "-DWSB_TESTS=OFF",
                        "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    tests = subprocess.run(["ctest", "-N"], cwd=tmp_path / "b", capture_output=True, text=True)
    assert "Total Tests: 0" in tests.stdout
