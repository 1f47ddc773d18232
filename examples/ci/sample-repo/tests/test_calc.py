import calc


def test_add():
    assert calc.add(2, 3) == 5


def test_source_tree_is_read_only(tmp_path):
    # The tests may write where they like in /workspace and /tmp (tmp_path), never in /src.
    (tmp_path / "scratch.txt").write_text("ok")
    try:
        open("/src/calc.py", "a")
    except OSError:
        pass
    else:
        raise AssertionError("the source tree is writable")


def test_command_line():
    # A CLI's test starts the interpreter again (python_subprocess in ci.toml).
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", "import calc; print(calc.add(40, 2))"],
                          capture_output=True, text=True, cwd="/src")
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
