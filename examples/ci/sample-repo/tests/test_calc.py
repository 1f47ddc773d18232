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
