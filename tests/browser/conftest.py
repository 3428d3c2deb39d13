"""Browser tests: selected with ``-m browser``; they need JupyterLab, Playwright and Debian's chromium."""


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless Chromium (slow; needs chromium)")
