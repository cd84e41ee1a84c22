"""Write .env with fresh random secrets (and the Kubernetes dev overlay's, if chosen);
remove the optional directories that the answers left empty.

The project's own scripts/make_env.py writes the secrets, so that the project (and its
CI) can make new ones the same way later. It runs in this process, imported: a second
interpreter per file would cost more than the rest of the bake's hook.
"""

import os
import sys

EXAMPLES = [
    ".env.example",
{%- if cookiecutter.use_kubernetes %}
    "k8s/overlays/dev/secrets.env.example",
{%- endif %}
]

# Importing must leave no __pycache__ in the project. The hook's directory is the project's.
sys.dont_write_bytecode = True
sys.path.insert(0, "scripts")
import make_env  # noqa: E402

for example in EXAMPLES:
    if make_env.main([example]) != 0:
        sys.exit(1)  # make_env printed why

# Cookiecutter 2.7 stops with "directory already exists" when a directory's name
# renders empty, so the optional files under k8s/ carry the condition in their own
# names and their directories are made whatever the answers. Those left with nothing
# in them go; os.rmdir refuses a directory that holds anything.
for directory, _, _ in os.walk("k8s", topdown=False):
    if not os.listdir(directory):
        os.rmdir(directory)
