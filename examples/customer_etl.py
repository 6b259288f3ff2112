"""The guide's ETL pipeline with error handling: retries on extraction, validation, enrichment.

python examples/customer_etl.py
"""

import time

from xlibrary.pipeline import ExtractionError, Pipeline, PipelineManager

pm = PipelineManager()


def create_etl_pipeline():
    """Create robust ETL pipeline."""

    etl_pipeline = Pipeline("customer_etl")

    @etl_pipeline.task("extract_customers")
    @etl_pipeline.retry_on_failure(max_retries=3)
    def extract_customer_data():
        """Extract customer data from multiple sources."""
        try:
            # Simulate database extraction
            customers = [
                {"id": 1, "name": "John Doe", "email": "john@example.com"},
                {"id": 2, "name": "Jane Smith", "email": "jane@example.com"},
            ]
            return {"customers": customers, "extracted_at": time.time()}
        except Exception as e:
            raise ExtractionError(f"Failed to extract customers: {str(e)}") from e

    @etl_pipeline.task("validate_data", depends_on=["extract_customers"])
    def validate_customer_data(extract_result):
        """Validate extracted customer data."""
        customers = extract_result["customers"]
        valid_customers = []

        for customer in customers:
            if customer.get("email") and "@" in customer["email"]:
                valid_customers.append(customer)

        return {"valid_customers": valid_customers, "validated_at": time.time()}

    @etl_pipeline.task("enrich_data", depends_on=["validate_data"])
    def enrich_customer_data(validation_result):
        """Enrich customer data with additional information."""
        customers = validation_result["valid_customers"]

        for customer in customers:
            # Simulate enrichment
            customer["segment"] = "premium" if customer["id"] % 2 == 0 else "standard"
            customer["enriched_at"] = time.time()

        return {"enriched_customers": customers}

    @etl_pipeline.task("load_data", depends_on=["enrich_data"])
    def load_customer_data(enrichment_result):
        """Load enriched data to data warehouse."""
        customers = enrichment_result["enriched_customers"]

        # Simulate loading to warehouse
        print(f"Loading {len(customers)} customers to data warehouse...")

        return {
            "loaded_customers": len(customers),
            "load_completed_at": time.time(),
            "status": "success",
        }

    return etl_pipeline


etl_pipeline = create_etl_pipeline()

if __name__ == "__main__":
    # Execute ETL pipeline
    result = pm.execute_pipeline(etl_pipeline)

    if result.success:
        print("ETL pipeline completed successfully!")
        print(f"Loaded {result.final_result['loaded_customers']} customers")
    else:
        print(f"ETL pipeline failed: {result.error}")
