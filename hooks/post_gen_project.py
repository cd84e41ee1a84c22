"""Write .env with fresh random secrets.

The project's own scripts/make_env.py does it, so that the project (and its CI) can
make a new .env the same way later.
"""

import runpy

runpy.run_path("scripts/make_env.py", run_name="__main__")
