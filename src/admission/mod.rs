//! Admission: pure decisions and the HTTPS server around them. (being written)
