"""Running the proxy: ``mitmdump`` as a child process on free ports, the providers' base-URL
listeners, the control channel a test runner speaks.
"""
