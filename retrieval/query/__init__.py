"""Understanding a sentence: constraints, brands and categories, and the item it is anchored to."""
