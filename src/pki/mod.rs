//! X.509 certificates and keys as the API server reads them.
