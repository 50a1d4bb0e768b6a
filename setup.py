"""Packages for setuptools: every package under ssl_zoo/ found automatically, plus the top-level methods/,
analysis/ and conf/ folders that install as ssl_zoo.methods / .analysis / .conf (pyproject's package-dir)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["ssl_zoo", "ssl_zoo.*"]), "ssl_zoo.methods", "ssl_zoo.analysis", "ssl_zoo.conf"])
