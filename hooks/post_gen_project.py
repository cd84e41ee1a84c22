"""Write .env with fresh random secrets (and the Kubernetes dev overlay's, if chosen);
remove the optional directories that the answers left empty.

The project's own scripts/make_env.py writes the secrets, so that the project (and its
CI) can make new ones the same way later.
"""

import os
import subprocess
import sys

EXAMPLES = [
    ".env.example",
{%- if cookiecutter.use_kubernetes %}
    "k8s/overlays/dev/secrets.env.example",
{%- endif %}
]

for example in EXAMPLES:
    subprocess.run([sys.executable, "scripts/make_env.py", example], check=True)

# Cookiecutter 2.7 stops with "directory already exists" when a directory's name
# renders empty, so the optional files under k8s/ carry the condition in their own
# names and their directories are made whatever the answers. Those left with nothing
# in them go; os.rmdir refuses a directory that holds anything.
for directory, _, _ in os.walk("k8s", topdown=False):
    if not os.listdir(directory):
        os.rmdir(directory)
