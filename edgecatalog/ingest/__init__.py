"""Ways images enter the catalog: the upload API and the capture folder. No Flask here."""
