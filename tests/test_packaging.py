"""What a package index and ``pip install`` get: the wheel and sdist, built as a release is.

The sdist is built first and the wheel from the unpacked sdist (``python -m build``'s
default), so a file the sdist forgets breaks the wheel here rather than for a user.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def _wheel(dist: Path) -> zipfile.ZipFile:
    (path,) = dist.glob("bearerguard-*.whl")
    return zipfile.ZipFile(path)


def _sdist_names(dist: Path) -> list[str]:
    (path,) = dist.glob("bearerguard-*.tar.gz")
    with tarfile.open(path) as archive:
        return [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]


def _metadata(dist: Path) -> Message:
    with _wheel(dist) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(wheel.read(name).decode())


def test_wheel_and_sdist_carry_the_license(dist: Path) -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    with _wheel(dist) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert wheel.read(name).decode() == license_text
    assert "LICENSE" in _sdist_names(dist)
    metadata = _metadata(dist)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_wheel_ships_the_package_typed_and_nothing_else(dist: Path) -> None:
    with _wheel(dist) as wheel:
        names = wheel.namelist()
    assert "bearerguard/py.typed" in names
    assert "bearerguard/pytest_plugin.py" in names
    assert {n.split("/")[0] for n in names} == {"bearerguard", "bearerguard-0.1.0.dist-info"}


def test_sdist_ships_runnable_tests_and_no_build_litter(dist: Path) -> None:
    names = _sdist_names(dist)
    for needed in ("CHANGELOG.md", "tests/conftest.py", "tests/redis_server.py", "examples/"):
        assert any(n.startswith(needed) for n in names), needed
    assert not any("node_modules" in n or "__pycache__" in n for n in names)


def test_metadata_classifies_the_package(dist: Path) -> None:
    classifiers = _metadata(dist).get_all("Classifier") or []
    for expected in (
        "Framework :: FastAPI",
        "Framework :: Pytest",
        "Programming Language :: Python :: 3.11",
        "Typing :: Typed",
        "Topic :: Security",
    ):
        assert expected in classifiers
    # A licence classifier next to License-Expression is refused by PEP 639.
    assert not any(c.startswith("License ::") for c in classifiers)


def test_long_description_is_the_readme_in_markdown(dist: Path) -> None:
    metadata = _metadata(dist)
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (ROOT / "README.md").read_text().strip()


def test_long_description_links_nothing_the_package_does_not_ship() -> None:
    # On a package index a relative link or image points nowhere.
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)", readme)
    targets += re.findall(r"""<(?:img|a)\s[^>]*(?:src|href)=["']([^"']+)""", readme)
    relative = [t for t in targets if not t.startswith(("https://", "#"))]
    assert relative == []


def test_make_commands_are_said_to_be_for_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    first_make = readme.index("make demo")
    assert "In a clone of the repository" in readme[:first_make]
    assert "pip install bearerguard" in readme


def test_readme_opens_with_exactly_the_two_commands_main_job_and_test_suite() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in first_block.splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile


def test_pytest_plugin_is_registered_by_entry_point(dist: Path) -> None:
    with _wheel(dist) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = wheel.read(name).decode()
    section = entry_points.split("[pytest11]", 1)[1].split("[", 1)[0]
    assert "bearerguard.pytest_plugin = bearerguard.pytest_plugin" in section


def test_every_docs_page_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    listed = set(re.findall(r"^  - [^:]+: (\S+\.md)$", config, re.M))
    assert pages == listed


def test_sdist_ships_what_the_docs_include(dist: Path) -> None:
    # The site builds from the sdist too: every file a page pulls in is there.
    names = set(_sdist_names(dist))
    included = {
        path
        for page in (ROOT / "docs").rglob("*.md")
        for path in re.findall(r'^--8<-- "([^"]+)"', page.read_text(), re.M)
    }
    assert included and included <= names
    assert {"mkdocs.yml", "docs/index.md"} <= names


def test_api_reference_documents_every_public_name() -> None:
    import bearerguard

    reference = (ROOT / "docs" / "reference.md").read_text()
    listed = set(re.findall(r"^::: bearerguard\.(\w+)$", reference, re.M))
    assert sorted(set(bearerguard.__all__) - listed) == []
