"""Operations: the shipped deployment (compose, image, init scripts)."""
