"""fs: the OS file system, and the rule that only engine/fs.py touches the OS."""

from __future__ import annotations

import ast
import os

import pytest

from engine.fs import OSFileSystem, join, write_all
from tests.engine_helpers import read_bytes, temp_dir

ENGINE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine")


def test_only_fs_module_touches_the_os() -> None:
    os_modules = {"os", "io", "fcntl", "shutil", "pathlib", "tempfile", "mmap", "posix"}
    for name in sorted(os.listdir(ENGINE_DIR)):
        # table_worker.py starts the helper process (os for pids and its environment); its
        # files, like everyone's, go through a FileSystem.
        if not name.endswith(".py") or name in ("fs.py", "table_worker.py"):
            continue
        tree = ast.parse(read_bytes(os.path.join(ENGINE_DIR, name)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported = {(node.module or "").split(".")[0]}
            else:
                imported = set()
            assert not imported & os_modules, f"engine/{name} imports {imported}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", f"engine/{name} calls open()"


def test_write_read_truncate_rename_remove() -> None:
    fs = OSFileSystem()
    with temp_dir() as d:
        path = join(d, "f")
        file = fs.open_write(path)
        write_all(file, b"hello world", 0)
        file.truncate(5)
        file.sync()
        file.close()
        file.close()  # idempotent
        assert fs.size(path) == 5
        fs.rename(path, join(d, "g"))
        reader = fs.open_read(join(d, "g"))
        reader.seek(1)
        assert reader.read(100) == b"ello"
        reader.close()
        assert fs.listdir(d) == ["g"]
        fs.sync_dir(d)
        fs.remove(join(d, "g"))
        assert fs.listdir(d) == []


def test_open_write_with_truncate_empties_the_file() -> None:
    fs = OSFileSystem()
    with temp_dir() as d:
        path = join(d, "f")
        with open(path, "wb") as f:
            f.write(b"old contents")
        fs.open_write(path, truncate=True).close()
        assert fs.size(path) == 0


def test_lock_is_exclusive_until_released() -> None:
    fs = OSFileSystem()
    with temp_dir() as d:
        lock = fs.lock(join(d, "LOCK"))
        with pytest.raises(OSError):
            fs.lock(join(d, "LOCK"))
        lock.release()
        lock.release()
        fs.lock(join(d, "LOCK")).release()
