import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "ponder.cli", *args], capture_output=True, text=True, timeout=60)


def test_help_explains_commands():
    p = run("--help")
    assert p.returncode == 0 and "ask" in p.stdout and "serve" in p.stdout


def test_serve_with_invalid_config_names_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lanes:\n  - name: a\n    n_ctxx: 10\n")
    p = run("serve", "--config", str(cfg))
    assert p.returncode == 2
    assert "lanes.0.n_ctxx: unknown key" in p.stderr and "Traceback" not in p.stderr


def test_bad_param_flag():
    p = run("ask", "hi", "--param", "novalue")
    assert p.returncode == 2 and "--param" in p.stderr
