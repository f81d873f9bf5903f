"""Local stand-ins of Google and Dify services, for tests and local demos only.

Nothing under local/ is deployed; production code never imports it.
"""
