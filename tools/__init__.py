"""Developer tools run from a checkout (`make run`, `make bench`): not part of the installed package.

They may use the test suite's machinery and start emulators; the appliance never imports them.
"""
