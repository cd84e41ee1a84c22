"""Static tier: the dependency bot's configuration, the template's own and each rendered
project's, passes Dependabot's schema and watches every kind of pinned dependency there is."""

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from harness.tools import BIN, run
from harness.variants import TEMPLATE_DIR, covering_variants, deployment_variants, variant_id

CONFIG = Path(".github", "dependabot.yml")
# Which answers change the file: Kubernetes (its manifests' images); the covering
# variants have every broker and backend, whose servers' images compose.yaml names.
DEPENDABOT_VARIANTS = covering_variants() + deployment_variants("use_kubernetes")
# A registry image with a tag; the project's own image (<slug>:local) is built, not pulled.
PULLED_IMAGE = re.compile(r"^\s*image: (?!\S+:local$)\S+:\S+$", re.MULTILINE)


def updates(path: Path) -> dict[str, dict]:
    """Each ecosystem's entry; an ecosystem listed twice is a mistake."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["updates"]
    by_ecosystem = {entry["package-ecosystem"]: entry for entry in entries}
    assert len(by_ecosystem) == len(entries), path
    return by_ecosystem


def directories(entry: dict) -> list[str]:
    return entry.get("directories", [entry.get("directory")])


def unwatched_image_folders(root: Path, watched: dict[str, dict]) -> list[str]:
    """The folders under root with a Dockerfile, or a YAML file (manifests, workflows)
    that names a pulled image, that no directory of the docker ecosystem matches."""
    files = [
        root / "Dockerfile",
        *root.glob("k8s/**/*.yaml"),
        *root.glob(".github/workflows/*.yml"),
    ]
    folders = {
        "/" + path.parent.relative_to(root).as_posix() if path.parent != root else "/"
        for path in files
        if path.exists()
        and (path.name == "Dockerfile" or PULLED_IMAGE.search(path.read_text(encoding="utf-8")))
    }
    patterns = directories(watched["docker"]) if "docker" in watched else []
    return sorted(
        folder
        for folder in folders
        if not any(fnmatch.fnmatch(folder, pattern) for pattern in patterns)
    )


def assert_grouped_and_cooled_down(path: Path) -> None:
    """Weekly, minor and patch updates grouped, every release left to age first."""
    for ecosystem, entry in updates(path).items():
        assert entry["schedule"]["interval"] == "weekly", ecosystem
        assert entry["cooldown"]["default-days"] >= 1, ecosystem
        (group,) = entry["groups"].values()
        assert group["patterns"] == ["*"], ecosystem


def test_dependabot_configs_pass_the_schema(bake):
    """The template's and every rendered dependabot.yml pass Dependabot's published schema."""
    configs = [TEMPLATE_DIR / CONFIG, *{bake(variant) / CONFIG for variant in DEPENDABOT_VARIANTS}]
    result = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.dependabot", *configs)
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_dependabot_watches_its_actions_test_tools_and_images():
    """The template's own workflows' actions and service images, and its locked test
    tools, get updates."""
    config = TEMPLATE_DIR / CONFIG
    watched = updates(config)
    assert directories(watched["github-actions"]) == ["/"]
    assert any((TEMPLATE_DIR / ".github" / "workflows").glob("*.yml"))
    assert directories(watched["uv"]) == ["/"] and (TEMPLATE_DIR / "uv.lock").exists()
    assert not unwatched_image_folders(TEMPLATE_DIR, watched)
    assert_grouped_and_cooled_down(config)


@pytest.mark.parametrize("variant", DEPENDABOT_VARIANTS, ids=variant_id)
def test_rendered_dependabot_watches_every_pin(bake, variant):
    """uv.lock, the Dockerfile, compose.yaml, the workflows' actions and service images
    and, with Kubernetes, every manifest folder that names a pulled image are watched."""
    project = bake(variant)
    watched = updates(project / CONFIG)
    assert set(watched) == {"uv", "docker", "docker-compose", "github-actions"}
    assert (project / "uv.lock").exists() and directories(watched["uv"]) == ["/"]
    assert (project / "compose.yaml").exists() and directories(watched["docker-compose"]) == ["/"]
    assert any((project / ".github" / "workflows").glob("*.yml"))
    assert directories(watched["github-actions"]) == ["/"]
    unwatched = unwatched_image_folders(project, watched)
    assert not unwatched, f"{unwatched} name images that Dependabot does not watch"
    assert_grouped_and_cooled_down(project / CONFIG)
