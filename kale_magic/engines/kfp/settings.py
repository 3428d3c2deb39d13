"""The KFP engine's settings: ``%config Kfp.host = ...`` (or ``c.Kfp.host`` in ``ipython_config.py``).

They were traits of the ``Kale`` magics class; ``%config Kale.host = ...`` still sets them, with a note
(see ``Kale._load_config``).  The host and UI also come from ``KF_PIPELINES_ENDPOINT`` /
``KF_PIPELINES_UI_ENDPOINT`` (:mod:`.client`).
"""

from __future__ import annotations

import sys

from traitlets import Bool, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable


class Kfp(Configurable):
    """Kubeflow Pipelines: where runs go and what their steps get."""

    host = Unicode(None, allow_none=True, help="KFP API endpoint; when set, %kale_run runs there."
                   ).tag(config=True)
    ui_host = Unicode(None, allow_none=True, help="KFP UI address for links (default: the host).").tag(config=True)
    namespace = Unicode(None, allow_none=True, help="KFP namespace (multi-user installations).").tag(config=True)
    base_image = Unicode("python:%d.%d" % sys.version_info[:2], help="Image of the KFP steps (default: stock "
                         "Python of the kernel's version; the steps install what they import).").tag(config=True)
    install_packages = Bool(True, help="KFP steps install, once per run, what they import (pinned to this "
                            "kernel's versions) and this kale-magic; False: the image holds them all "
                            "(kale-magic image builds one).").tag(config=True)
    pip_index_urls = List(Unicode(), help="Package indexes KFP steps install from (the first is the index, the "
                          "others extra ones); default: the image's pip configuration.").tag(config=True)
    run_as_user = Int(65534, allow_none=True, help="User id KFP pods run as (group 0, HOME in /tmp); None: the "
                      "image's user.").tag(config=True)
    packages = List(Unicode(), help="More pip packages each KFP step installs at start (default none)."
                    ).tag(config=True)
    caching = Bool(True, help="Let KFP reuse the results of unchanged steps.").tag(config=True)
    volumes = List(Unicode(), help="PVCs mounted in every KFP step: 'pvc-name:/mount/path'.").tag(config=True)
    secrets = List(Unicode(), help="Secrets as env vars in KFP steps: 'secret:KEY=ENV[,KEY=ENV]'.").tag(config=True)
    accelerator = Unicode("nvidia.com/gpu", help="Accelerator type of %%step --gpu on KFP.").tag(config=True)
    pipeline_root = Unicode(None, allow_none=True, help="Object store where KFP keeps the runs' artifacts and the "
                            "steps read the workspace snapshot, e.g. 'minio://mlpipeline/v2/artifacts' or "
                            "'s3://bucket/prefix' (credentials: AWS_* or MINIO_* variables), or a folder for "
                            "kfp.local; unset: kale-magic's runtime and the snapshot go to the namespace's default "
                            "root (its kfp-launcher ConfigMap, else KFP's default) and run.load cannot read KFP "
                            "results."
                            ).tag(config=True)

    @validate("base_image")
    def _check_base_image(self, proposal):
        from ...images import check_image  # the same check as %%step --image

        try:
            return check_image(proposal.value)
        except ValueError as exc:
            raise TraitError(f"Kfp.base_image = {proposal.value!r}: {exc}.") from None

    @validate("packages", "pip_index_urls")
    def _check_pip_settings(self, proposal):
        from .pip_args import check_setting  # the same check as the compiler's

        try:
            return check_setting(proposal.trait.name, proposal.value)
        except ValueError as exc:
            raise TraitError(str(exc)) from None
