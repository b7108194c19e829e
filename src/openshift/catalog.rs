//! File-based operator catalogs (FBC).
