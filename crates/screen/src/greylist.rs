//! Greylisting keyed on verified identity.
