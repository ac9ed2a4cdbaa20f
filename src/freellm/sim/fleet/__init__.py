"""Simulated providers for the core replay: the fakes' answers, without HTTP, in virtual time.

:mod:`.meter` holds the usage counters: the fakes' caps semantics at O(1) amortized per call.
"""
