"""packaging/: the Debian package builds from the tree and holds what it should.

Building runs ``packaging/build-deb.sh``: it pip-installs the project and its
dependencies from PyPI into a virtual environment (network needed; about 30 s with
a warm pip cache). The package is built once per test session.

With ``BACKUPMAND_TEST_DEB=1`` (CI sets it; root needed) the package is also
installed on this machine with ``dpkg -i``, checked and purged by
``packaging/test-deb.sh``. Without it that test is not collected at all: it
changes the machine (a system user, /opt, /etc), which a developer's
``pytest`` run must not do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from backupmand.config import parse_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
SCRIPTS = [PACKAGING / "build-deb.sh", PACKAGING / "test-deb.sh", PACKAGING / "lock.sh",
           ROOT / ".ci" / "run"]
MAINTAINER_SCRIPTS = [PACKAGING / "debian" / name for name in ("postinst", "prerm", "postrm")]
BUILD_TIMEOUT = 900

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT)


def _version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def _run(
    *argv: str | Path, timeout: float = 120, cwd: str | Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, check=False,
        timeout=timeout, cwd=cwd,
    )


# --------------------------------------------------------------------------- no build


def test_packaged_config_is_valid_and_matches_the_unit() -> None:
    source = PACKAGING / "config.yml"
    settings = parse_settings(source.read_text(), source=str(source), env={})
    unit = (ROOT / "systemd" / "backupmand.service").read_text()
    writable = re.findall(r"^ReadWritePaths=-?(\S+)", unit, flags=re.MULTILINE)
    for drive in settings.drives:
        if drive.provider == "local":
            assert str(drive.folder) in writable, f"{drive.folder} not in ReadWritePaths="
    # The catalog and the dumps live in StateDirectory= (/var/lib/backupmand).
    assert str(settings.database.db_path).startswith("/var/lib/backupmand/")
    for data_source in settings.data_sources:
        assert str(data_source.tmp_folder).startswith("/var/lib/backupmand/")


def test_packaged_config_needs_nothing_but_the_host() -> None:
    settings = parse_settings((PACKAGING / "config.yml").read_text(), env={})
    assert {s.provider for s in settings.data_sources} == {"sqlite"}
    assert {d.provider for d in settings.drives} == {"local"}
    assert settings.database.provider == "sqlite"


def test_shell_scripts_are_clean() -> None:
    # shellcheck when installed (.ci/run installs it); a syntax check otherwise.
    shellcheck = shutil.which("shellcheck")
    for script in SCRIPTS + MAINTAINER_SCRIPTS:
        assert os.access(script, os.X_OK), f"{script} is not executable"
        shell = "bash" if "bash" in script.read_text().splitlines()[0] else "sh"
        if shellcheck:
            result = _run(shellcheck, "-s", shell, script)
        else:
            result = _run(shell, "-n", script)
        assert result.returncode == 0, result.stdout + result.stderr


def test_maintainer_scripts_never_delete_backups() -> None:
    postrm = (PACKAGING / "debian" / "postrm").read_text()
    for line in postrm.splitlines():
        if "rm -" in line and not line.lstrip().startswith("#"):
            assert "/var/lib" not in line and "/var/backups" not in line
            assert "STATE_DIR" not in line and "BACKUP_DIR" not in line, line


# --------------------------------------------------------------------------- the build


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = _run(PACKAGING / "build-deb.sh", "-o", out, timeout=BUILD_TIMEOUT, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-5000:]
    built = Path(result.stdout.strip().splitlines()[-1])
    assert built.parent == out and built.exists()
    return built


@pytest.fixture(scope="session")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("extracted")
    result = _run("dpkg-deb", "-x", deb, target)
    assert result.returncode == 0, result.stderr
    return target


@pytest.mark.slow
def test_file_name_and_fields(deb: Path) -> None:
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert deb.name == f"backupmand_{_version()}_{arch}.deb"
    info = _run("dpkg-deb", "--info", deb)
    assert info.returncode == 0, info.stderr
    fields = dict(
        (name, _run("dpkg-deb", "--field", deb, name).stdout.strip())
        for name in ("Package", "Version", "Architecture", "Depends", "Recommends",
                     "Installed-Size", "Maintainer")
    )
    assert fields["Package"] == "backupmand"
    assert fields["Version"] == _version()
    assert fields["Architecture"] == arch
    assert re.search(r"python3 \(>= 3\.1\d\)", fields["Depends"])
    assert re.search(r"\bpython3\.1\d\b", fields["Depends"])
    for recommended in ("postgresql-client", "mariadb-client | default-mysql-client",
                        "sqlite3", "zstd"):
        assert recommended in fields["Recommends"]
    assert int(fields["Installed-Size"]) > 1000
    assert re.fullmatch(r".+ <.+@.+>", fields["Maintainer"])


@pytest.mark.slow
def test_contents(deb: Path) -> None:
    listing = _run("dpkg-deb", "--contents", deb)
    assert listing.returncode == 0, listing.stderr
    entries = {}
    for line in listing.stdout.splitlines():
        mode, owner, _size, _date, _time, path, *rest = line.split(maxsplit=6)
        entries[path] = (mode, owner, " ".join(rest))
    assert entries["./lib/systemd/system/backupmand.service"][:2] == ("-rw-r--r--", "root/root")
    assert entries["./etc/backupmand/config.yml"][:2] == ("-rw-r-----", "root/root")
    assert entries["./etc/backupmand/"][0] == "drwxr-x---"
    assert entries["./usr/bin/backupmand"] == (
        "lrwxrwxrwx", "root/root", "-> /opt/backupmand/bin/backupmand")
    assert entries["./opt/backupmand/bin/backupmand"][0] == "-rwxr-xr-x"
    # The venv's interpreter is the versioned Debian one the package depends on.
    versioned = [p for p in entries if re.fullmatch(r"\./opt/backupmand/bin/python3\.\d+", p)]
    assert len(versioned) == 1
    assert entries[versioned[0]][2] == "-> /usr/bin/" + versioned[0].rsplit("/", 1)[1]
    assert any(re.fullmatch(r"\./opt/backupmand/lib/python3\.\d+/site-packages/backupmand/"
                            r"_build\.py", path) for path in entries)
    assert all(owner == "root/root" for _mode, owner, _rest in entries.values())
    # Operators' data directories are made by postinst, so dpkg never owns them.
    assert not any(path.startswith(("./var/lib/", "./var/backups/")) for path in entries)


@pytest.mark.slow
def test_control_files(deb: Path, tmp_path: Path) -> None:
    control = tmp_path / "DEBIAN"
    result = _run("dpkg-deb", "--control", deb, control)
    assert result.returncode == 0, result.stderr
    assert (control / "conffiles").read_text().split() == ["/etc/backupmand/config.yml"]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(control / script, os.X_OK)
        assert (control / script).read_text() == (PACKAGING / "debian" / script).read_text()
    assert "adduser --system" in (control / "postinst").read_text()
    md5sums = (control / "md5sums").read_text()
    assert "lib/systemd/system/backupmand.service" in md5sums
    assert "etc/backupmand/config.yml" not in md5sums  # conffiles: dpkg tracks them


@pytest.mark.slow
def test_packaged_files_match_the_tree(extracted: Path) -> None:
    assert (extracted / "lib/systemd/system/backupmand.service").read_bytes() == (
        ROOT / "systemd" / "backupmand.service").read_bytes()
    config = PACKAGING / "config.yml"
    assert (extracted / "etc/backupmand/config.yml").read_bytes() == config.read_bytes()
    example = extracted / "usr/share/doc/backupmand/examples/backupmand.example.yml"
    assert example.read_bytes() == (ROOT / "config" / "backupmand.example.yml").read_bytes()


@pytest.mark.slow
def test_no_build_path_left_in_the_program(extracted: Path) -> None:
    venv = extracted / "opt" / "backupmand"
    assert (venv / "bin" / "backupmand").read_text().splitlines()[0] == (
        "#!/opt/backupmand/bin/python")
    assert "/opt/backupmand" in (venv / "pyvenv.cfg").read_text()
    result = _run("grep", "-rlI", "backupmand-deb.", venv)
    assert result.returncode == 1, result.stdout  # 1: no match


@pytest.mark.slow
def test_packaged_program_imports_from_its_own_environment(extracted: Path) -> None:
    # The venv works from any folder: its python finds pyvenv.cfg next to itself.
    python = extracted / "opt" / "backupmand" / "bin" / "python"
    program = (
        "import backupmand, backupmand.config, backupmand.systemd, backupmand.journald, "
        "aiohttp, aioboto3, aiogoogle, zstandard\n"
        "from backupmand.version import build_info\n"
        "print(backupmand.__file__)\n"
        "print(build_info()['CommitSHA'])\n"
        "print(backupmand.config.__cached__)\n"
    )
    result = _run(python, "-I", "-c", program, cwd="/")
    assert result.returncode == 0, result.stderr
    module_file, commit, cached = result.stdout.splitlines()
    assert module_file.startswith(str(extracted / "opt" / "backupmand" / "lib"))
    assert commit not in ("", "unknown")
    # Byte code is shipped, compiled for the installed paths (/opt/backupmand/...).
    assert Path(cached).exists()
    data = Path(cached).read_bytes()
    assert b"/opt/backupmand/lib/" in data and str(extracted).encode() not in data


if os.environ.get("BACKUPMAND_TEST_DEB") == "1":

    @pytest.mark.slow
    def test_install_check_and_purge_on_this_machine(deb: Path) -> None:
        result = _run(PACKAGING / "test-deb.sh", deb, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "test-deb: PASS" in result.stdout
