"""Conformance: suites nobody here wrote (Wycheproof, the RFC examples), properties, fuzzing.

A package on purpose, as tests/interop is: its helper modules are imported by
relative name and cannot shadow another test directory's.
"""
