"""Reports for the privacy office: the signed evidence report and its renderings."""
