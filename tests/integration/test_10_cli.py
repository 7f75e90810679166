"""SPEC §1/§2: the command line, --check-config diagnostics (`FILE: JSON.PATH: what`), exit
statuses, the start path refusing a bad config, ${VAR} expansion."""

import json
import re
import signal
import socket

import pytest

from conftest import default_config, free_port


def write_config(tmp_path, cfg, name="wsbridge.json"):
    p = tmp_path / name
    p.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
    return str(p)


def base_config():
    return default_config(free_port(), free_port())


def problem_lines(out, path):
    """Lines of `out` shaped `FILE: PATH: message` for the given file and JSON path."""
    pat = re.compile(r"^%s: %s: \S.*$" % (re.escape(path[0]), re.escape(path[1])), re.M)
    return pat.findall(out)


def combined(r):
    return (r.stdout or "") + (r.stderr or "")


def test_version(run_cli):
    r = run_cli(["--version"])
    assert r.returncode == 0, combined(r)
    assert re.search(r"\d+\.\d+\.\d+", r.stdout), "no version number on stdout: %r" % r.stdout


def test_help(run_cli):
    r = run_cli(["--help"])
    assert r.returncode == 0, combined(r)
    text = combined(r)
    for opt in ("--config", "--check-config", "--demo", "--version", "--help"):
        assert opt in text, "--help does not mention %s:\n%s" % (opt, text)


def test_unknown_option_is_an_error_not_a_crash(run_cli):
    r = run_cli(["--no-such-option"])
    assert r.returncode in (1, 2), combined(r)
    assert r.stderr.strip(), "no reason on stderr"


@pytest.mark.parametrize("order", ["check_first", "config_first", "long_option"])
def test_check_config_valid_prints_ok(run_cli, tmp_path, order):
    f = write_config(tmp_path, base_config())
    args = {"check_first": ["--check-config", "-c", f],
            "config_first": ["-c", f, "--check-config"],
            "long_option": ["--config", f, "--check-config"]}[order]
    r = run_cli(args)
    assert r.returncode == 0, combined(r)
    assert r.stdout.strip().splitlines()[-1].strip().endswith("ok"), combined(r)


def test_check_config_from_env_variable(run_cli, tmp_path):
    f = write_config(tmp_path, base_config())
    r = run_cli(["--check-config"], env={"WSBRIDGE_CONFIG": f})
    assert r.returncode == 0, combined(r)
    assert r.stdout.strip().endswith("ok")
    bad = base_config()
    bad["limts"] = {}
    g = write_config(tmp_path, bad, "bad.json")
    r = run_cli(["--check-config"], env={"WSBRIDGE_CONFIG": g})
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (g, "limts")), combined(r)


def test_check_config_typo_top_level_key(run_cli, tmp_path):
    cfg = base_config()
    cfg["limts"] = cfg.pop("limits")
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (f, "limts")), \
        "expected a line '%s: limts: ...' in:\n%s" % (f, combined(r))
    assert "ok" not in r.stdout.split()


def test_check_config_typo_nested_key(run_cli, tmp_path):
    cfg = base_config()
    cfg["limits"]["max_conections"] = 10
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (f, "limits.max_conections")), combined(r)


def test_check_config_unknown_connector(run_cli, tmp_path):
    cfg = base_config()
    cfg["channels"] = [
        {"match": "mem.**", "connector": "m", "topic": "mem-{1}"},
        {"match": "orders", "connector": "kafak", "topic": "orders.v1"},
    ]
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    want = '%s: channels[1].connector: unknown connector "kafak"' % f
    assert want in combined(r).splitlines(), "expected the line\n  %s\nin:\n%s" % (want, combined(r))


def test_check_config_wrong_type(run_cli, tmp_path):
    cfg = base_config()
    cfg["drain_timeout_ms"] = "soon"
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (f, "drain_timeout_ms")), combined(r)


def test_check_config_reports_every_problem(run_cli, tmp_path):
    cfg = base_config()
    cfg["limts"] = {}
    cfg["limits"]["max_conections"] = 1
    cfg["channels"] = [{"match": "x", "connector": "kafak", "topic": "x"}]
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    out = combined(r)
    for path in ("limts", "limits.max_conections", "channels[0].connector"):
        assert problem_lines(out, (f, path)), "%s not reported in:\n%s" % (path, out)


def test_check_config_acl_typo_is_an_error(run_cli, tmp_path):
    """A typo in a security-relevant section must not silently disable it."""
    cfg = base_config()
    cfg["acl"] = [{"subscribe": ["**"], "publsh": ["**"]}]
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (f, "acl[0].publsh")), combined(r)


@pytest.mark.parametrize("text", ['{"listen": "127.0.0.1:1",', "not json at all", "",
                                  '["an", "array"]', '{"listen": 1} trailing'])
def test_check_config_bad_json(run_cli, tmp_path, text):
    f = write_config(tmp_path, text)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert f in combined(r), "the file name is not in the diagnostic:\n%s" % combined(r)


def test_check_config_missing_file(run_cli, tmp_path):
    f = str(tmp_path / "does-not-exist.json")
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert f in combined(r)


def test_start_with_broken_config_exits_1_with_reason(run_cli, tmp_path):
    cfg = base_config()
    cfg["limts"] = {}
    f = write_config(tmp_path, cfg)
    r = run_cli(["-c", f], timeout=10)
    assert r.returncode == 1, combined(r)
    assert r.stderr.strip(), "no reason on stderr"
    assert "limts" in r.stderr, r.stderr
    assert r.stdout.strip() == "" or "ok" not in r.stdout.split()


def test_start_with_bad_json_exits_1(run_cli, tmp_path):
    f = write_config(tmp_path, "{")
    r = run_cli(["-c", f], timeout=10)
    assert r.returncode == 1, combined(r)
    assert r.stderr.strip()


def test_start_with_port_in_use_exits_1(run_cli, tmp_path):
    """A start-up error (the listen port is taken) is exit 1 with a one-line reason."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        cfg = base_config()
        cfg["listen"] = "127.0.0.1:%d" % s.getsockname()[1]
        f = write_config(tmp_path, cfg)
        r = run_cli(["-c", f], timeout=10)
        assert r.returncode == 1, combined(r)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert lines, "no reason on stderr"
        assert str(s.getsockname()[1]) in lines[-1], "the reason does not name the address: %r" % lines
    finally:
        s.close()


def test_start_with_admin_port_in_use_exits_1(run_cli, tmp_path):
    """The admin listener starts after the connectors: a taken admin port stops the started
    connector threads before the loops are freed, and exits 1 naming the address (under
    ASan this also checks nothing is used after it is freed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        cfg = base_config()
        cfg["admin"]["listen"] = "127.0.0.1:%d" % s.getsockname()[1]
        f = write_config(tmp_path, cfg)
        r = run_cli(["-c", f], timeout=10)
        assert r.returncode == 1, combined(r)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        # the connector's own log lines may come after the reason
        assert any("admin" in l and str(s.getsockname()[1]) in l for l in lines), lines
    finally:
        s.close()


def test_env_expansion_in_listen(bridge_factory):
    port = free_port()
    b = bridge_factory({"listen": "${WSB_IT_LISTEN}"}, env={"WSB_IT_LISTEN": "127.0.0.1:%d" % port})
    b.port = port
    c = b.connect()
    c.close()
    assert b.stop() == 0


def test_env_expansion_default_value(bridge_factory):
    port = free_port()
    b = bridge_factory({"listen": "${WSB_IT_SURELY_UNSET_VAR:-127.0.0.1:%d}" % port})
    b.port = port
    c = b.connect()
    c.close()


def test_env_expansion_set_overrides_default(bridge_factory):
    port = free_port()
    b = bridge_factory({"listen": "${WSB_IT_LISTEN2:-127.0.0.1:1}"},
                       env={"WSB_IT_LISTEN2": "127.0.0.1:%d" % port})
    b.port = port
    c = b.connect()
    c.close()


def test_env_expansion_unset_without_default_is_an_error(run_cli, tmp_path):
    cfg = base_config()
    cfg["path"] = "${WSB_IT_SURELY_UNSET_VAR}"
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (f, "path")), combined(r)
    assert "WSB_IT_SURELY_UNSET_VAR" in combined(r)


def test_env_expansion_in_nested_string(run_cli, tmp_path):
    """Any string may use ${VAR}: here a channel's topic and the log level."""
    cfg = base_config()
    cfg["channels"][0]["topic"] = "${WSB_IT_PREFIX}-{1}"
    cfg["log"]["level"] = "${WSB_IT_LEVEL:-info}"
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f], env={"WSB_IT_PREFIX": "pre"})
    assert r.returncode == 0, combined(r)
    cfg["log"]["level"] = "${WSB_IT_LEVEL}"
    f = write_config(tmp_path, cfg, "b.json")
    r = run_cli(["--check-config", "-c", f], env={"WSB_IT_PREFIX": "pre", "WSB_IT_LEVEL": "loud"})
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (f, "log.level")), combined(r)


def test_sigterm_right_after_start_exits_0(bridge_factory):
    b = bridge_factory()
    assert b.stop(signal.SIGTERM, timeout=10) == 0


def test_logs_are_json_lines(bridge_factory):
    b = bridge_factory()
    c = b.connect()
    c.close()
    b.stop()
    lines = [l for l in b.logs().splitlines() if l.strip()]
    assert lines, "the bridge logged nothing at debug level"
    for line in lines:
        rec = json.loads(line)
        assert isinstance(rec, dict)
        for k in ("ts", "level", "msg"):
            assert k in rec, "log line without %r: %s" % (k, line)


@pytest.mark.parametrize("limits,path", [
    ({"inbound_rate": {"per_second": 50, "burst": 0.5}}, "limits.inbound_rate.burst"),
    ({"inbound_bytes": {"per_second": 10000, "burst": 1000}}, "limits.inbound_bytes.burst"),
    ({"handshake_rate_per_ip": {"per_second": 5, "burst": 0}},
     "limits.handshake_rate_per_ip.burst"),
    ({"path": "ws"}, "path"),
])
def test_check_config_limit_that_refuses_everything(run_cli, tmp_path, limits, path):
    """Values each in range that would refuse every message or handshake are errors that
    name the path (issue 9 item 9), and the start path refuses them too."""
    cfg = base_config()
    if "path" in limits:
        cfg.update(limits)
    else:
        cfg["limits"].update(limits)
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    assert problem_lines(combined(r), (f, path)), combined(r)
    r = run_cli(["-c", f])
    assert r.returncode == 1, combined(r)
    assert path in r.stderr, r.stderr



@pytest.mark.parametrize("origins", [None, []])
def test_check_config_cookie_source_needs_allowed_origins(run_cli, tmp_path, origins):
    """Cross-site WebSocket hijacking (issue 9 item 8): a cookie token source with no listed
    origins is an error naming allowed_origins; ["*"] or a list makes it valid."""
    cfg = base_config()
    cfg["auth"] = {"token_sources": ["header", "cookie:wsb_token"],
                   "jwt": {"algorithms": ["HS256"], "keys": [{"secret": "s" * 32}]}}
    if origins is not None:
        cfg["allowed_origins"] = origins
    f = write_config(tmp_path, cfg)
    r = run_cli(["--check-config", "-c", f])
    assert r.returncode == 1, combined(r)
    lines = problem_lines(combined(r), (f, "allowed_origins"))
    assert lines and "auth.token_sources[1]" in lines[0], combined(r)
    for ok in (["*"], ["https://app.example"]):
        cfg["allowed_origins"] = ok
        g = write_config(tmp_path, cfg, "ok.json")
        r = run_cli(["--check-config", "-c", g])
        assert r.returncode == 0, combined(r)
