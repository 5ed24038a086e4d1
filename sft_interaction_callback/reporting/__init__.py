"""Reporting: W&B extras (:mod:`.wandb_log`), plots and the HTML report.

Submodules are imported on use, so importing the package pulls in neither ``wandb`` nor a
plotting library.
"""
