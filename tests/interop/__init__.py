"""Interop tests against panva's oidc-provider.

A package on purpose: its conftest is then ``tests.interop.conftest``-like, not a
second top-level ``conftest`` shadowing the one other test modules import from.
"""
