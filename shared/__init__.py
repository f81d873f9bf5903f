"""Code shared by the loader and the worker; copied into each function's zip as `shared/`."""
