"""Pictures: drawing helpers (colours, fonts), training curves and diagnostic figures."""
