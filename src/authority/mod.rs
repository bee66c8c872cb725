//! Pure authority model: live tools, delegation graph, shared validation. (being written)
