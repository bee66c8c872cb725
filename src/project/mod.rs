//! Pure projection: desired ServiceAccount and NetworkPolicy for an identity. (being written)
