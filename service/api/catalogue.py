"""``/v1/catalogue``: what the catalogue holds, as a whole (its categories, brands and prices)."""

from __future__ import annotations

from litestar import Controller, get

from retrieval.state.catalogue import Catalogue
from service.access import READ, SECURITY
from service.api.dependencies import CatalogueFacets, FacetCounts


class CatalogueController(Controller):
    path = "/v1/catalogue"
    tags = ["catalogue"]
    security = SECURITY

    @get("/facets", opt={"scope": READ}, sync_to_thread=True, summary="The catalogue's categories, brands and prices")
    def facets(self, catalogue: Catalogue, facet_counts: FacetCounts) -> CatalogueFacets:
        """Every category and brand with its number of items (most first; an item counts once in
        each of its categories), the price range of the items that have a price, and the number of
        items. Read once and kept until the catalogue changes."""
        return facet_counts.get(catalogue)
