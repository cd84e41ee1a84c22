"""Free-text answers are data, never code: each renders verbatim into a project whose
files all parse, or is refused with one line and nothing on disk."""

import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.baking import assert_refused, bake_cli
from harness.variants import COOKIECUTTER_JSON

FREE_TEXT_FIELDS = ["project_name", "description", "author_name"]
# project_name also makes the default package name; a fixed one keeps this about the text.
SLUG = "hostile_project"

# Printable, not blank: every free-text field renders these verbatim.
RENDERED_EVERYWHERE = [
    # quotes and backslashes (Python, TOML, shell)
    "it's",
    'say "hi"',
    "'''",
    '"""',
    "\"'\"'",
    "\\",
    "ends with a backslash\\",
    "C:\\new\\table",
    "\\n \\t \\u0041 \\x41 \\N{BULLET} (escapes, not characters)",
    # Jinja (cookiecutter renders every answer as Jinja unless the extension stops it)
    "{{ 7*7 }}",
    "{{7*7}}",
    "{{ cookiecutter.project_slug }}",
    "{{ cookiecutter }}",
    "{{ undefined_name }}",
    "{{ ''.__class__.__mro__ }}",
    "{{",
    "}}",
    "{% raw %}",
    "{% endraw %}",
    "{% raw %}{{ 7*7 }}{% endraw %}",
    "{% endraw %}{{ 7*7 }}{% raw %}",
    "{% if true %}yes{% endif %}",
    "{%",
    "%}",
    "{# comment #}",
    "{#",
    "{{- 7*7 -}}",
    # cookiecutter.json's own Jinja, all but exactly (see test_answer_equal_to_...)
    COOKIECUTTER_JSON["project_slug"] + " ",
    " " + COOKIECUTTER_JSON["__uses_redis"],
    "{{cookiecutter.project_slug}} ",
    # shell and format strings
    "${X}",
    "${HOME:-x}",
    "$(rm -rf /)",
    "`id`",
    "$HOME",
    "%(name)s %s %d",
    "{name} {0}",
    "; echo pwned #",
    # YAML
    "key: value",
    "- item",
    "&anchor",
    "*alias",
    "!!python/object/apply:os.system ['id']",
    "null",
    "~",
    "yes",
    "no",
    "1e3",
    "# not a comment",
    "[1, 2]",
    "{a: b}",
    "| literal",
    "> folded",
    "@at",
    "---",
    # TOML
    "[x]",
    "[[x]]",
    "a = b",
    'x.y = "z"',
    # Python, HTML and Markdown
    "__import__('os').system('id')",
    "None",
    "<script>alert(1)</script>",
    "&amp; &lt;",
    "*bold* _em_ [link](https://example.com)",
    # Unicode
    "emoji 🎉🐍",
    "👩‍💻 a ZWJ sequence",
    "中文描述",
    "日本語のテキスト",
    "مرحبا بالعالم",
    "שלום עולם",
    "\u202eRTL override",
    "zero\u200bwidth\u200djoiner",
    "\ufeffBOM",
    "e\u0301 (combining accent)",
    # sizes and spacing
    "  leading and trailing spaces  ",
    "x",
    "{{ 7*7 }} ' \" \\ ${X} " * 500,
]

# (value, the fields that render it); the other free-text fields refuse it.
# project_name and author_name are one line, not blank; a description may break lines.
DEPENDS_ON_FIELD = [
    ("", {"description"}),
    ("   ", {"description"}),
    ("line one\nline two", {"description"}),
    ("windows\r\nline", {"description"}),
    ("\n", {"description"}),
    ("ends with a newline\n", {"description"}),
    ("tab\tseparated", {"description"}),
    ("carriage\rreturn", {"description"}),
    ("line\u2028separator", {"description"}),
    ("paragraph\u2029separator", {"description"}),
    ('"""\nnot the end of a TOML string """\n\'\'\'', {"description"}),
    ("{% raw %}\n{% endraw %}\n{{ 7*7 }}", {"description"}),
    ("key: value\n- item\n  nested: [1]", {"description"}),
    ("NUL\x00byte", set()),
    ("bell\x07", set()),
    ("escape \x1b[31mred\x1b[0m", set()),
    ("DEL\x7f", set()),
    ("vertical\x0btab", set()),
    ("form\x0cfeed", set()),
    ("next line\x85(C1)", set()),
    ("backspace\x08", set()),
]


def read_exactly(path: Path) -> str:
    # Path.read_text would turn "\r\n" into "\n".
    return path.read_bytes().decode("utf-8")


def assert_project_parses(project: Path) -> None:
    for path in project.rglob("*"):
        if path.suffix == ".toml":
            tomllib.loads(read_exactly(path))
        elif path.suffix in (".yaml", ".yml"):
            # Every document (Kubernetes files hold several), by libyaml: the same YAML
            # as yaml.safe_load's, several times faster.
            list(yaml.load_all(read_exactly(path), Loader=yaml.CSafeLoader))
        elif path.suffix == ".py":
            compile(read_exactly(path), str(path), "exec")


def assert_rendered_verbatim(output_dir: Path, fields: list[str], value: str) -> None:
    """The project parses, and each of these fields holds value as written."""
    [project] = output_dir.iterdir()
    assert_project_parses(project)
    for field in fields:
        assert_field_verbatim(project, field, value)


def assert_field_verbatim(project: Path, field: str, value: str) -> None:
    pyproject = tomllib.loads(read_exactly(project / "pyproject.toml"))["project"]
    readme = read_exactly(project / "README.md")
    if field == "project_name":
        assert readme.splitlines()[0] == f"# {value}"
    elif field == "description":
        assert pyproject["description"] == value
        assert f"\n{value}\n" in readme
    else:
        assert pyproject["authors"] == [{"name": value}]


def bake_free_text(bake_answers, field: str, value: str):
    answers = {field: value}
    if field == "project_name":
        answers["project_slug"] = SLUG
    return bake_answers(**answers)


@pytest.mark.parametrize("value", RENDERED_EVERYWHERE, ids=lambda v: repr(v)[:40])
def test_printable_hostile_text_renders_verbatim_in_every_field(bake_answers, value):
    """Quotes, backslashes, Jinja, shell, YAML and TOML syntax, emoji, CJK and RTL text
    render verbatim in every free-text field, into a project whose TOML, YAML and Python
    parse."""
    # One bake carries the value in all three fields: they land in different places.
    output_dir, error = bake_answers(
        project_name=value, project_slug=SLUG, description=value, author_name=value
    )
    assert error is None, repr(error)
    assert_rendered_verbatim(output_dir, FREE_TEXT_FIELDS, value)


@pytest.mark.parametrize(
    ("field", "value", "renders"),
    [
        (field, value, field in fields)
        for value, fields in DEPENDS_ON_FIELD
        for field in FREE_TEXT_FIELDS
    ],
    ids=lambda v: repr(v)[:40],
)
def test_blank_or_control_text_renders_or_is_refused_by_field(bake_answers, field, value, renders):
    """Blank text and line breaks render in a description but are refused in a one-line
    field; other control characters are refused everywhere, with one line naming the
    field and value, and nothing on disk."""
    output_dir, error = bake_free_text(bake_answers, field, value)
    if renders:
        assert error is None, repr(error)
        assert_rendered_verbatim(output_dir, [field], value)
    else:
        assert_refused(output_dir, error, field, value)


@pytest.mark.parametrize("field", FREE_TEXT_FIELDS)
# Fixed examples keep CI reproducible.
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=st.text())
def test_any_text_renders_verbatim_or_is_refused(bake_answers, field, value):
    """Any text renders verbatim or is refused with one line and nothing on disk, and
    printable text that is not blank always renders."""
    output_dir, error = bake_free_text(bake_answers, field, value)
    # --hypothesis-show-statistics tells how many examples rendered.
    event("rendered" if error is None else "refused")
    if error is None:
        assert_rendered_verbatim(output_dir, [field], value)
    else:
        assert not (value.isprintable() and value.strip()), repr(error)
        assert_refused(output_dir, error, field, value)
    shutil.rmtree(output_dir)


def test_command_line_answers_are_literal(tmp_path):
    """Answers given on the cookiecutter command line are not rendered as Jinja."""
    result = bake_cli(tmp_path, description="{{ 7*7 }}", author_name="{% raw %}x{% endraw %}")
    assert result.returncode == 0, result.stdout + result.stderr
    pyproject = tomllib.loads((tmp_path / "celery_service" / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == "{{ 7*7 }}"
    assert pyproject["project"]["authors"] == [{"name": "{% raw %}x{% endraw %}"}]


def test_default_slug_is_made_from_the_literal_project_name(bake_answers):
    """The default package name is slugified from the project name as written: Jinja in
    the name is not rendered first, while cookiecutter.json's own Jinja still is."""
    output_dir, error = bake_answers(project_name="Mail {{ cookiecutter.broker }} Sender")
    assert error is None, repr(error)
    [project] = output_dir.iterdir()
    # Rendered, the name would have given mail_redis_sender.
    assert project.name == "mail_cookiecutter_broker_sender"
    assert (project / "mail_cookiecutter_broker_sender" / "tasks.py").is_file()


@pytest.mark.parametrize(
    "value",
    [COOKIECUTTER_JSON["project_slug"], "{{cookiecutter.project_slug}}"],
    ids=["cookiecutter.json value", "folder name"],
)
def test_answer_equal_to_the_templates_own_jinja_renders_like_it(bake_answers, value):
    """The one exception to literal answers: cookiecutter renders its own text and the
    answers alike, from strings, and its public behaviour gives no way to tell an answer
    that is exactly one of the template's own Jinja texts (a cookiecutter.json value, a
    file or folder name) from that text, so it renders like it (here: a package name).
    A character more or less and it is literal (RENDERED_EVERYWHERE above)."""
    output_dir, error = bake_answers(project_slug=SLUG, description=value)
    assert error is None, repr(error)
    [project] = output_dir.iterdir()
    description = tomllib.loads(read_exactly(project / "pyproject.toml"))["project"]["description"]
    # project_slug's default slugifies the default project name, "Celery Service".
    assert description in (SLUG, "celery_service")
