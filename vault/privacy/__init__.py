"""The privacy office: subject access, restriction of processing, and staff e-mail retention."""
